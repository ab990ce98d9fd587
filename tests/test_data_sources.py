"""Every file in data/ says where it comes from (data/SOURCES.md) and is the file that was
documented (sha256 in data/SHA256SUMS, as pydicom checks its bundled test files)."""

import hashlib
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
BOOKKEEPING = {"SOURCES.md", "SHA256SUMS"}


def data_files() -> list[str]:
    return sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*")
                  if p.is_file() and p.name not in BOOKKEEPING)


def test_every_data_file_has_a_source_line():
    sources = (DATA / "SOURCES.md").read_text()
    for name in data_files():
        # a file is named itself or through its folder's pattern (protocols/*.toml)
        folder_pattern = f"{Path(name).parent}/*{Path(name).suffix}"
        assert f"`{name}`" in sources or f"`{folder_pattern}`" in sources, name


def test_data_files_match_their_checksums():
    listed = {}
    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("./")] = digest
    assert sorted(listed) == data_files()
    for name, digest in listed.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name
