def test_provider_can_create_and_read_a_patient(client, provider, create_patient):
    created = create_patient(provider)
    response = client.get(f"/api/v1/patients/{created['id']}", headers=provider.headers)
    assert response.status_code == 200
    assert response.get_json()["last_name"] == "Lovelace"
