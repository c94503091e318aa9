"""The interactive documentation's assets (Swagger UI), served from the pinned swagger-ui-bundle
package rather than a CDN, so the docs page works on a hospital network without internet access."""
from __future__ import annotations

from flask import Blueprint
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/api/v1/docs/assets/"

blp = Blueprint("api-docs-assets", __name__, static_folder=swagger_ui_path, static_url_path=ASSETS_URL.rstrip("/"))
