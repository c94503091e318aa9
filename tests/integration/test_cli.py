"""Flask commands: keys generate, seed demo."""
from clarity import config, create_app
from tests.conftest import make_settings


def test_keys_generate_prints_keys_the_config_accepts(server, test_database):
    app = create_app(make_settings(server, test_database))
    result = app.test_cli_runner().invoke(args=["keys", "generate"])
    assert result.exit_code == 0
    env = dict(line.split("=", 1) for line in result.output.splitlines())
    settings = config.from_env({**env, "CLARITY_ENV": "production", "DATABASE_URL": "postgresql://x/y"})
    assert settings.active_data_key in settings.data_keys and len(settings.blind_index_key) == 32


def test_seed_demo_creates_users_who_can_sign_in(app, client):
    result = app.test_cli_runner().invoke(args=["seed", "demo", "--password", "demo password 123"])
    assert result.exit_code == 0 and "provider@clarity.local" in result.output
    login = client.post("/api/v1/auth/tokens", json={"email": "provider@clarity.local", "password": "demo password 123"})
    assert login.status_code == 201


def test_seed_demo_refuses_production(server, test_database, keyring):
    app = create_app(make_settings(server, test_database, env="production"), keyring=keyring)
    result = app.test_cli_runner().invoke(args=["seed", "demo", "--password", "demo password 123"])
    assert result.exit_code != 0 and "production" in result.output


def test_key_commands_refuse_a_step_the_configuration_does_not_fit(app):
    rebuild = app.test_cli_runner().invoke(args=["keys", "rebuild-index"])
    assert rebuild.exit_code != 0 and "CLARITY_BLIND_INDEX_NEXT_KEY" in rebuild.output


def test_keys_rotate_reports_nothing_to_do_on_a_rotated_database(app):
    result = app.test_cli_runner().invoke(args=["keys", "rotate", "--batch-size", "50"])
    assert result.exit_code == 0 and "0 remaining" in result.output
