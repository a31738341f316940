"""`model pull` end to end: a contributor gets exactly the registered weights, proven by the audit log;
anything tampered with (the file, the registry, the bytes on the way, the proof) is refused."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from sqlalchemy import update

from mshale_fl.access.client import AccessClientError, DownloadedFile, open_access_client
from mshale_fl.access.model_files import model_file_name
from mshale_fl.access.pull import TamperedDownload, save_pulled_model, verify_download
from mshale_fl.access.tables import model_versions
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.receipts import Receipt
from mshale_fl.training.model import load_model

from .world import AccessWorld, spec_request

pytestmark = pytest.mark.rabbitmq


async def test_a_contributor_pulls_the_registered_weights_and_any_alteration_in_transit_is_refused(
    world: AccessWorld, tmp_path: Path
) -> None:
    alpha, beta = world.register(3), world.register(3)
    for lab in (alpha, beta):
        world.contribute(lab)
    first = world.save_model(1, parent=0)
    second = world.save_model(2, parent=1)
    world.train(1, [alpha])
    world.train(2, [alpha, beta])
    async with world.running():
        await world.announce(1, first, parent=0)
        await world.announce(2, second, parent=1)
        async with open_access_client(beta.api_key, world.broker_url) as client:
            latest = await client.download("latest", timeout=30)
            refused = await client.download(1, timeout=30)

    assert isinstance(latest, DownloadedFile)
    assert len(latest.data) > 16 * 1024  # the world serves 16 KiB chunks: this came in several
    pulled = verify_download(latest, world.signer.verifier, requested="latest")
    assert pulled.version == 2 and pulled.sha256 == second
    assert set(pulled.card.contributors) == {alpha.id, beta.id}
    paths = save_pulled_model(tmp_path / "pulled", pulled)
    model, metadata = load_model(paths["model"])
    assert metadata.version == 2 and paths["model"].name == model_file_name(2)
    assert f"| {beta.id} |" in paths["card_markdown"].read_text()
    assert Receipt.from_json(paths["receipt"].read_text()).index == pulled.receipt.index

    assert not isinstance(refused, DownloadedFile) and refused.status == "denied"
    assert [reason.code for reason in refused.denial.reasons] == ["model.not_contributed"]
    assert "download a version you helped train (2)" in refused.denial.remedy

    def altered(**changes: object) -> DownloadedFile:
        return DownloadedFile(first=latest.first.model_copy(update=changes), data=changes.pop("data", latest.data))  # type: ignore[arg-type]

    flipped = bytearray(latest.data)
    flipped[len(flipped) // 2] ^= 0x01
    with pytest.raises(TamperedDownload, match="damaged in transfer"):
        verify_download(DownloadedFile(latest.first, bytes(flipped)), world.signer.verifier, requested=2)
    # An attacker who also rewrote the announced file hash is caught by the weights' own digest.
    rehashed = latest.first.model_copy(update={"file_sha256": hashlib.sha256(flipped).hexdigest()})
    with pytest.raises(TamperedDownload, match="refused"):
        verify_download(DownloadedFile(rehashed, bytes(flipped)), world.signer.verifier, requested=2)
    with pytest.raises(TamperedDownload, match="asked for model version 1"):
        verify_download(latest, world.signer.verifier, requested=1)
    with pytest.raises(TamperedDownload, match="does not verify"):
        verify_download(latest, NoteSigner.generate("mshale.test/access").verifier, requested=2)
    receipt = dict(latest.first.receipt or {})
    receipt["record"] = receipt["record"].replace('"model_version":2', '"model_version":3')
    with pytest.raises(TamperedDownload, match="does not verify"):
        verify_download(altered(receipt=receipt), world.signer.verifier, requested=2)
    card = dict(latest.first.card or {}, sha256="0" * 64)
    with pytest.raises(TamperedDownload, match="model card"):
        verify_download(altered(card=card), world.signer.verifier, requested=2)
    with pytest.raises(TamperedDownload, match="no audit proof"):
        verify_download(altered(receipt=None), world.signer.verifier, requested=2)
    assert not (tmp_path / "refused").exists()


async def test_a_tampered_model_file_is_never_served_nor_used(world: AccessWorld) -> None:
    lab = world.register(3)
    world.contribute(lab)
    first, second = world.save_model(1), world.save_model(2, parent=1)
    world.train(1, [lab])
    world.train(2, [lab])
    async with world.running():
        await world.announce(1, first)
        await world.announce(2, second, parent=1)
        world.save_model(2, seed=99)  # other weights under the same name: what an intruder would do
        async with open_access_client(lab.api_key, world.broker_url) as client:
            with pytest.raises(AccessClientError, match="is registered with") as swapped:
                await client.download(2, timeout=30)
            fallback = (await client.predict([spec_request(lab)], timeout=30))[0].answer
            path = world.models_dir / model_file_name(1)
            data = bytearray(path.read_bytes())
            data[-200] ^= 0xFF  # a flipped bit in the weights of version 1
            path.write_bytes(bytes(data))
            with pytest.raises(AccessClientError, match="unavailable"):
                await client.download(1, timeout=30)
            nothing = (await client.predict([spec_request(lab, seed=1)], timeout=30))[0].answer
    assert "Mishale must restore it" in str(swapped.value)
    # Predictions come from the newest version whose file checks out, and say which one that is.
    assert fallback.type == "prediction.ready" and fallback.payload.model_version == 1
    assert nothing.type == "access.denied"
    assert [reason.code for reason in nothing.payload.reasons] == ["model.unavailable"]
    assert "registered with" in nothing.payload.reasons[0].message


async def test_a_forged_registry_entry_is_caught_against_the_audit_log(world: AccessWorld) -> None:
    lab = world.register(3)
    world.contribute(lab)
    sha = world.save_model(1)
    world.train(1, [lab])
    async with world.running():
        await world.announce(1, sha)
        # Someone with write access to the ledger and the model folder swaps version 1 consistently.
        forged = world.save_model(1, seed=99)
        with world.engine.begin() as connection:
            connection.execute(update(model_versions).where(model_versions.c.version == 1).values(sha256=forged))
        async with open_access_client(lab.api_key, world.broker_url) as client:
            downloaded = await client.download(1, timeout=30)
    assert isinstance(downloaded, DownloadedFile) and downloaded.first.sha256 == forged
    with pytest.raises(TamperedDownload, match="audit log's model.published says") as caught:
        verify_download(downloaded, world.signer.verifier, requested=1)
    assert sha in str(caught.value) and forged in str(caught.value)


def test_a_first_reply_without_its_facts_is_refused() -> None:
    from mshale_fl.access.wire import ModelDownloadReply

    empty = DownloadedFile(ModelDownloadReply(status="ok", data=base64.b64encode(b"x").decode()), b"x")
    with pytest.raises(TamperedDownload, match="does not say which version"):
        verify_download(empty, NoteSigner.generate("x").verifier, requested="latest")
