"""Flask commands: keys generate, seed demo, seed bench."""
import json
import stat

from clarity import config, create_app
from tests.conftest import make_settings


def test_keys_generate_prints_keys_the_config_accepts(server, test_database):
    app = create_app(make_settings(server, test_database))
    result = app.test_cli_runner().invoke(args=["keys", "generate"])
    assert result.exit_code == 0
    env = dict(line.split("=", 1) for line in result.output.splitlines())
    settings = config.from_env({**env, "CLARITY_ENV": "production", "DATABASE_URL": "postgresql://x/y?sslmode=verify-full"})
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


def test_seed_bench_writes_providers_whose_tokens_read_their_own_patients_only(server, fresh_database, keyring,
                                                                                 tmp_path):
    app = create_app(make_settings(server, fresh_database, env="development"), keyring=keyring)
    out = tmp_path / "seed.json"
    try:
        result = app.test_cli_runner().invoke(args=["seed", "bench", "--patients", "31", "--providers", "3",
                                                    "--out", str(out)])
        assert result.exit_code == 0, result.output
        seeded = json.loads(out.read_text())
        client = app.test_client()

        def read(provider, patient_id):
            return client.get(f"/api/v1/patients/{patient_id}", headers={"Authorization": f"Bearer {provider['token']}"})

        providers = seeded["providers"]
        own, other = read(providers[0], providers[0]["patient_ids"][0]), read(providers[0], providers[1]["patient_ids"][0])
    finally:
        app.extensions["clarity"].db.close()
    assert list(seeded) == ["providers"]
    assert [sorted(p) for p in providers] == [["patient_ids", "provider_id", "token"]] * 3
    assert [len(p["patient_ids"]) for p in providers] == [11, 10, 10]
    assert len({i for p in providers for i in p["patient_ids"]}) == 31
    assert len({p["provider_id"] for p in providers}) == 3
    assert own.status_code == 200 and own.get_json()["provider_id"] == providers[0]["provider_id"]
    assert own.get_json()["mrn"].startswith("SEED-")
    assert other.status_code == 404
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "31 patient(s) over 3 provider(s)" in result.output
    assert not any(p["token"] in result.output for p in providers)
    assert [f.name for f in tmp_path.iterdir()] == ["seed.json"]


def test_seed_bench_refuses_production(server, test_database, keyring, tmp_path):
    app = create_app(make_settings(server, test_database, env="production"), keyring=keyring)
    result = app.test_cli_runner().invoke(args=["seed", "bench", "--patients", "3", "--providers", "1",
                                                "--out", str(tmp_path / "seed.json")])
    assert result.exit_code != 0 and "production" in result.output
    assert not (tmp_path / "seed.json").exists()
