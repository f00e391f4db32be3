"""Search passages as prompt text: one line per hit, cut between sentences, never silently."""

from __future__ import annotations

from agentflow.passages import is_passages, render_passages
from agentflow.tool import render_output

DANUBE = {
    "id": "d1",
    "title": "Danube",
    "text": "The Danube is a river.  It is 2,850 km long. It flows into the Black Sea.",
}
RHINE = {"id": "d2", "title": "Rhine", "text": "The Rhine is a river. It is 1,230 km long."}


def test_passages_that_fit_are_one_line_each_with_no_ids_or_json() -> None:
    rendered = render_passages([DANUBE, RHINE], 1000)
    assert rendered.text == (
        "[Danube] The Danube is a river. It is 2,850 km long. It flows into the Black Sea.\n"
        "[Rhine] The Rhine is a river. It is 1,230 km long."
    )
    assert rendered.whole == {"d1", "d2"}


def test_a_budget_keeps_whole_sentences_best_hit_first_and_marks_the_gaps() -> None:
    # Danube whole is 82 characters, Rhine's first sentence line 31 (+1 newline): 114 fit.
    rendered = render_passages([DANUBE, RHINE], 114)
    assert rendered.text == (
        "[Danube] The Danube is a river. It is 2,850 km long. It flows into the Black Sea.\n"
        "[Rhine] The Rhine is a river. …"
    )
    assert rendered.whole == {"d1"}  # the Rhine was cut: a later node may still show it
    assert len(rendered.text) <= 114


def test_a_sentence_that_does_not_fit_makes_way_for_a_shorter_one_after_it() -> None:
    long_middle = {
        "id": "d3",
        "title": "Nile",
        "text": "The Nile is long. " + "It passes many towns and " * 10 + "cities. It ends.",
    }
    rendered = render_passages([long_middle], 40)
    assert rendered.text == "[Nile] The Nile is long. … It ends."
    assert rendered.whole == frozenset()


def test_when_no_sentence_fits_the_first_is_cut_and_says_so() -> None:
    rendered = render_passages([DANUBE], 20)
    assert rendered.text == "[Danube] The Danub …"
    assert len(rendered.text) <= 20 and rendered.whole == frozenset()


def test_render_output_renders_passages_and_leaves_other_values_as_json() -> None:
    assert render_output([DANUBE], 1000).startswith("[Danube] The Danube")
    assert render_output([{"title": "no id"}], 1000) == '[{"title": "no id"}]'
    assert not is_passages([]) and not is_passages([{"id": 3}]) and is_passages([RHINE])


def test_a_web_hit_keeps_its_address_for_fetch_page() -> None:
    hit = {"id": "u", "title": "Danube", "text": "A river.", "url": "https://e.org/d", "score": 1}
    assert render_passages([hit], 1000).text == "[Danube] (https://e.org/d) A river."


def test_a_long_unbroken_text_still_shows_its_start() -> None:
    # 3,000 characters the sentence splitter cannot split: cut at spaces into pieces of <= 300.
    big = {"id": "b", "title": "Big", "text": "word " * 600}
    rendered = render_passages([big], 400)
    assert rendered.text == "[Big] " + " ".join(["word"] * 60) + " …"  # 299 + 8 characters
    assert rendered.whole == frozenset()


def test_hits_left_out_are_counted() -> None:
    hits = [{"id": f"h{i}", "title": f"H{i}", "text": "a" * 200} for i in range(3)]
    rendered = render_passages(hits, 450)  # two lines of 205 fit, the third does not
    assert rendered.text.split("\n") == [
        "[H0] " + "a" * 200,
        "[H1] " + "a" * 200,
        "(+1 more hit not shown)",
    ]
    assert rendered.whole == {"h0", "h1"}
