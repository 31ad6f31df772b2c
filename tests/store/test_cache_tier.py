"""The store as the cache's second tier (audiopipe.store.cache_tier) on a folder store, with real
ffmpeg: a second empty local cache restores from the store; what the store holds is checked before it
names or fills a file here (a folder store reads files in place, so the tier hashes them itself); a store
that cannot be written is given up on with one warning and the work goes on."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from audiopipe.preparation.pipeline import PrepareSettings, prepare_many
from audiopipe.store import DirectoryStore
from audiopipe.store.cache_tier import StoreTier


@pytest.fixture
def wav(tmp_path: Path, audio_dir: Path) -> Path:
    shutil.copy(audio_dir / "tone.wav", tmp_path / "tone.wav")
    return tmp_path / "tone.wav"


def prepare(wav: Path, tmp_path: Path, name: str, tier: StoreTier) -> Path:
    """Prepare ``wav`` into a fresh folder with a fresh local cache, through ``tier``; the output."""
    [outcome] = prepare_many([wav], tmp_path / name / "out", PrepareSettings(cache_dir=tmp_path / name / "cache"),
                             tier=tier)
    assert outcome.result is not None, outcome.error
    [output] = outcome.result.outputs
    return output.path


def pointer_and_entry(store: DirectoryStore) -> tuple[Path, Path]:
    [pointer] = (store.root / "manifests").iterdir()
    return pointer, store.path_of(pointer.read_text())


def test_an_empty_cache_restores_what_the_store_recorded(wav, tmp_path):
    store = DirectoryStore(tmp_path / "store")
    first = StoreTier(store)
    made = prepare(wav, tmp_path, "one", first)
    assert first.recorded == 1 and first.hits == 0
    second = StoreTier(store)
    restored = prepare(wav, tmp_path, "two", second)
    assert second.hits == 1 and second.recorded == 0
    assert restored.name == made.name and restored.read_bytes() == made.read_bytes()
    _pointer, entry = pointer_and_entry(store)
    manifest = json.loads(entry.read_text())
    assert str(tmp_path) not in entry.read_text()  # no local path of the first machine in the store
    assert manifest["result"]["outputs"][0]["path"] == made.name


def test_a_damaged_part_in_a_folder_store_is_refused(wav, tmp_path, caplog):
    store = DirectoryStore(tmp_path / "store")
    prepare(wav, tmp_path, "one", StoreTier(store))
    _pointer, entry = pointer_and_entry(store)
    part = store.path_of(json.loads(entry.read_text())["parts"][0])
    os.chmod(part, 0o644)
    part.write_bytes(part.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    caplog.set_level(logging.WARNING)
    tier = StoreTier(store)
    out = prepare(wav, tmp_path, "two", tier)
    assert tier.hits == 0 and "does not hold the content its key names" in caplog.text
    assert not out.read_bytes().endswith(b"0123456789")


def test_a_manifest_naming_a_path_is_refused(wav, tmp_path, caplog):
    store = DirectoryStore(tmp_path / "store")
    prepare(wav, tmp_path, "one", StoreTier(store))
    pointer, entry = pointer_and_entry(store)
    forged = json.loads(entry.read_text())
    forged["result"]["outputs"][0]["path"] = "tone/../../../escaped.ogg"
    forged_file = tmp_path / "forged.json"
    forged_file.write_text(json.dumps(forged))
    key = store.put(forged_file, suffix=".json").key
    os.chmod(pointer, 0o644)
    pointer.write_text(key)  # the pointer now names a well-formed, hash-true, hostile manifest
    caplog.set_level(logging.WARNING)
    tier = StoreTier(store)
    prepare(wav, tmp_path, "two", tier)
    assert tier.hits == 0 and "not 'tone' and a suffix" in caplog.text
    assert not list(tmp_path.rglob("escaped.ogg"))


def test_a_store_that_cannot_be_written_is_given_up_with_one_warning(wav, tmp_path, caplog):
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store folder should be")
    caplog.set_level(logging.WARNING)
    tier = StoreTier(DirectoryStore(blocker))
    out = prepare(wav, tmp_path, "one", tier)
    assert out.is_file() and tier.broken and tier.recorded == 0
    assert caplog.text.count("cannot use the store") == 1
