"""The README's fenced code blocks, as the tests that run or check them read them."""

import glob
import os
import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    """The README's fenced blocks of one language, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def shell_commands() -> list[list[str]]:
    """Every command of the README's bash blocks as words (continuations joined, comments dropped)."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def readme_report_command(workdir: Path) -> list[str]:
    """The README's `saerad report` line, pointed at a demo workdir instead of the cache."""
    (words,) = [w for w in shell_commands() if w[:2] == ["saerad", "report"]]
    out = []
    for word in words:
        word = os.path.expanduser(word).replace(os.path.expanduser("~/.cache/saerad/demo-v3"), str(workdir))
        out.extend(sorted(glob.glob(word)) if "*" in word else [word])
    return out
