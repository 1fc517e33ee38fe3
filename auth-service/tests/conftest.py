import pytest


@pytest.fixture(params=["gateway", "auth-service"])
def app(request, config):
    """Every auth test runs against the service alone and mounted in the embedded gateway: same URLs, same answers."""
    if request.param == "gateway":
        from reelhouse_gateway import create_app
    else:
        from auth_service import create_app
    app = create_app(config)
    app.config["TESTING"] = True
    yield app
    app.extensions["reelhouse"].close()
