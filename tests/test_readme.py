"""README.md's sample answers are those the demo data really gives: tests/readme_samples.py
generates them (``make readme``), and these tests generate them again and compare."""

from __future__ import annotations

import json
import re

import pytest
from dates import MS_PER_YEAR, ms
from readme_samples import AS_OF, README, Answer, answer, comparable, fill, samples

from userdata.demo import generate_demo

#: A date-dependent answer beside the README's own: the average age of those without an image.
STATS = ("GET", "/stats?is_image_exists=false")


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text()


@pytest.fixture(scope="module")
def answers(readme: str) -> dict[tuple[str, str], Answer]:
    """The service's answers to the README's samples and to STATS, from one run."""
    return answer([*samples(readme), STATS])


def blocks(text: str) -> list[str]:
    return re.findall(r"^<!-- sample: .*?^<!-- /sample -->$", comparable(text), re.DOTALL | re.MULTILINE)


def test_readme_samples_are_the_services_answers(readme: str, answers: dict[tuple[str, str], Answer]) -> None:
    assert samples(readme), "README.md has no <!-- sample: ... --> blocks"
    # Block by block, so a failure names the sample; duration_ms left out (it is the run's own).
    assert blocks(fill(readme, answers)) == blocks(readme), "README.md's samples are stale: make readme"


def test_the_answers_are_those_of_the_instant_the_readme_names(answers: dict[tuple[str, str], Answer]) -> None:
    # Worked out apart from the service: the demo users without an image, their mean exact age
    # at AS_OF. The service's clock stood there, whatever today's date is.
    now = ms(*(int(part) for part in re.findall(r"\d+", AS_OF)))
    files = generate_demo()
    births = [
        int(data.splitlines()[1].split(b",")[2])
        for name, data in files.items()
        if name.endswith(".csv") and name.replace(".csv", ".png") not in files
    ]
    stats = json.loads(answers[STATS].body)
    assert stats == {
        "count": len(births),
        "average_age": pytest.approx(sum(now - b for b in births) / len(births) / MS_PER_YEAR, rel=1e-12),
    }


def test_readme_names_that_instant(readme: str) -> None:
    assert f"standing at {AS_OF}" in " ".join(readme.split())
