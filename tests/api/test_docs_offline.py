"""The docs page and every asset it loads come from the app itself: no CDN, so it works on a
network without internet access, and without a token."""
import re


def test_the_docs_page_loads_only_assets_the_app_serves(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) >= 3, assets
    assert not re.search(r"https?://", html), "the page names an external address"
    types = {}
    for url in assets:
        assert url.startswith("/api/v1/docs/assets/"), url
        response = client.get(url)
        assert response.status_code == 200, url
        assert len(response.get_data()) > 1000, url
        types[url.rsplit(".", 1)[-1]] = response.mimetype
    assert types == {"css": "text/css", "js": "text/javascript"}
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_an_asset_that_does_not_exist_is_404(client):
    assert client.get("/api/v1/docs/assets/nothing.js").status_code == 404
