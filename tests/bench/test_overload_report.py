"""The overload report shows how much CPU the load generators took beside each burst: from loadtest's own
accounting, and "–" for runs recorded before it was kept (the committed results are one)."""

import copy
import json

from benchmarks.performance import overload


def committed() -> dict:
    return json.loads((overload.RESULTS / "overload.json").read_text())


def burst_rows(text: str) -> list[str]:
    table = text.split("Overload: twice the reference rate")[1]
    return [line for line in table.splitlines() if line.startswith("| default |") or line.startswith("| small |")]


def cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_a_load_generators_cores_are_its_cpu_seconds_over_its_wall_time():
    assert overload.generator_cores({"client": {"cpu_s": 6.0, "wall_s": 20.0}}) == 0.3


def test_the_burst_table_shows_each_generators_cores_and_a_dash_where_none_were_recorded():
    summary = committed()
    recorded = copy.deepcopy(summary)
    for result in recorded["results"]:
        result["overload"]["generator_cores"] = {"base": 0.31, "burst": 0.347}
    for result in summary["results"]:
        result["overload"].pop("generator_cores", None)
    with_cores, without = burst_rows(overload.markdown(recorded)), burst_rows(overload.markdown(summary))
    assert len(with_cores) == len(without) == len(summary["results"])
    assert [cells(row)[12] for row in with_cores] == ["0.31 + 0.35"] * len(with_cores)
    assert [cells(row)[12] for row in without] == ["–"] * len(without)
