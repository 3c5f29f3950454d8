"""The fixed development / held-out split of the NAB corpus, by file, declared before any run used it.

Settings are chosen on the development files only and reported on the held-out files; the split file itself is
never changed after the fact, so this module only reads and checks it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aelstm.core.errors import DataError

from .corpus import NabFile


@dataclass(frozen=True)
class Split:
    """Two disjoint sets of corpus keys ("<category>/<name>.csv")."""

    development: tuple[str, ...]
    held_out: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path) -> Split:
        data = json.loads(Path(path).read_text())
        split = cls(tuple(data["development"]), tuple(data["held_out"]))
        overlap = sorted(set(split.development) & set(split.held_out))
        if overlap or len(set(split.development)) != len(split.development):
            raise DataError(f"{path}: the halves overlap or repeat a file: {overlap}")
        return split

    def check_covers(self, keys: Sequence[str]) -> None:
        """The split must name exactly the files of the corpus: a file in neither half would go unreported."""
        named = set(self.development) | set(self.held_out)
        if named != set(keys):
            missing, extra = sorted(set(keys) - named), sorted(named - set(keys))
            raise DataError(f"the split does not match the corpus: unnamed {missing}, not in the corpus {extra}")

    def halves(self, corpus: Sequence[NabFile]) -> tuple[list[NabFile], list[NabFile]]:
        """(development files, held-out files), each in corpus order."""
        self.check_covers([nab.key for nab in corpus])
        development = set(self.development)
        return [nab for nab in corpus if nab.key in development], [nab for nab in corpus if nab.key not in development]
