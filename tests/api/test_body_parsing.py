"""Every blueprint of the API reads JSON bodies with the safe loader (clarity.api.body)."""
from flask_smorest import Blueprint as SmorestBlueprint

from clarity.api import body
from clarity.api.common import Blueprint


def test_every_api_blueprint_parses_bodies_with_the_safe_loader(app):
    api_blueprints = [bp for bp in app.blueprints.values() if isinstance(bp, SmorestBlueprint)]
    assert len(api_blueprints) >= 10
    for blueprint in api_blueprints:
        assert isinstance(blueprint, Blueprint), blueprint.name
        assert isinstance(blueprint.ARGUMENTS_PARSER, body.Parser), blueprint.name


def test_request_get_json_uses_the_safe_loader_too(app):
    assert isinstance(app.json, body.JSONProvider)
