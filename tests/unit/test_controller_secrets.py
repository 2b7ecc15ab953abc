"""Secrets the pods read: digests in the pod templates roll exactly their readers, never reveal a
value; a value the pods could not use is refused naming the Secret and the field."""

from __future__ import annotations

import base64
from typing import Any

from tests.unit.test_specs_support import children, example, find

from hda.controller.secret_inputs import SecretInputs, WantedSecret, check_secret, wanted_secrets
from hda.controller.status import Observation, compute_status
from hda.specs import SECRETS_HASH_ANNOTATION, child_names, with_secret_digests

PASSWORD = "correct horse battery staple"


def secret(name: str, **values: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "pipelines"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def secret_hashes(password: str, token: str) -> dict[str, str]:
    """Workload name suffix -> its secrets-hash annotation, for hda-full.yaml."""
    found = SecretInputs(
        "pipelines",
        {
            "telemetry-valkey": secret("telemetry-valkey", password=password),
            "telemetry-ingest-token": secret("telemetry-ingest-token", token=token),
        },
    )
    hashes = {}
    for obj in children(example("hda-full.yaml")):
        built = with_secret_digests(obj, found.digests)
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            annotations = built["spec"]["template"]["metadata"]["annotations"]
            hashes[obj["metadata"]["name"].rsplit("-", 1)[1]] = annotations.get(
                SECRETS_HASH_ANNOTATION
            )
    return hashes


def test_every_workload_reading_a_secret_carries_its_digest() -> None:
    hashes = secret_hashes(PASSWORD, "t0ken")
    assert set(hashes) == {"valkey", "ingest", "workers", "output"}
    assert all(hashes.values())


def test_new_password_rolls_every_pod_that_reads_it() -> None:
    before, after = secret_hashes(PASSWORD, "t0ken"), secret_hashes(PASSWORD + "!", "t0ken")
    assert {name for name in before if before[name] != after[name]} == {
        "valkey",
        "ingest",
        "workers",
        "output",
    }


def test_new_ingest_token_rolls_only_the_pods_that_check_it_ingest_and_output() -> None:
    before, after = secret_hashes(PASSWORD, "t0ken"), secret_hashes(PASSWORD, "t0ken-2")
    assert {name for name in before if before[name] != after[name]} == {"ingest", "output"}


def test_digest_reveals_no_value() -> None:
    for value in secret_hashes(PASSWORD, "t0ken").values():
        assert value is not None
        assert PASSWORD not in value
        assert base64.b64encode(PASSWORD.encode()).decode() not in value


def test_objects_without_pods_are_left_alone() -> None:
    configmap = find(children(example()), "ConfigMap", "-valkey-config")
    assert with_secret_digests(configmap, {"x": "y"}) is configmap


EXISTING = WantedSecret("valkey-auth", "password", "spec.redis.auth.existingSecret", "x")


def test_password_with_a_trailing_newline_is_refused_naming_secret_and_field() -> None:
    problem = check_secret(EXISTING, secret("valkey-auth", password=PASSWORD + "\n"))
    assert problem is not None
    assert problem.startswith("spec.redis.auth.existingSecret: ")
    assert "Secret valkey-auth" in problem
    assert "ends with a line break" in problem
    assert check_secret(EXISTING, secret("valkey-auth", password=PASSWORD + "\r\n")) == problem


def test_missing_secret_missing_key_and_empty_value_are_refused() -> None:
    assert check_secret(EXISTING, None) == (
        "spec.redis.auth.existingSecret: Secret valkey-auth not found"
    )
    assert check_secret(EXISTING, secret("valkey-auth", pass_word=PASSWORD)) == (
        "spec.redis.auth.existingSecret: Secret valkey-auth has no key password"
    )
    assert check_secret(EXISTING, secret("valkey-auth", password="")) is not None


def test_a_usable_password_and_the_generated_secret_pass() -> None:
    assert check_secret(EXISTING, secret("valkey-auth", password=PASSWORD)) is None
    generated = WantedSecret("g", "password", None, "x")
    assert check_secret(generated, None) is None


def test_wanted_secrets_name_the_fields_that_point_at_them() -> None:
    hda = example("hda-full.yaml")
    assert [(w.name, w.key, w.field) for w in wanted_secrets(hda, child_names(hda))] == [
        ("telemetry-valkey", "password", "spec.redis.auth.existingSecret"),
        ("telemetry-ingest-token", "token", "spec.ingest.tokenSecret"),
    ]


def test_secret_errors_make_degraded_and_not_ready() -> None:
    message = "spec.redis.auth.existingSecret: Secret valkey-auth not found"
    status, _ = compute_status(
        Observation(generation=1, secret_errors=(message,)), None, "2026-11-30T06:00:00Z"
    )
    found = {c["type"]: c for c in status["conditions"]}
    assert (found["Degraded"]["status"], found["Degraded"]["reason"]) == ("True", "SecretInvalid")
    assert found["Degraded"]["message"] == message
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "SecretInvalid")


def test_valkey_claim_has_its_own_retention_policy() -> None:
    objects = children(example("hda-full.yaml"))
    valkey = find(objects, "StatefulSet", "-valkey")
    output = find(objects, "StatefulSet", "-output")
    assert valkey["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Retain",
    }
    assert output["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
