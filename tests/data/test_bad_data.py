"""Bad training and evaluation data: each fault is cleaned with a logged count or rejected with
one line that names the file, the line and the field."""

import json
import logging

import pytest

from mrl.common.errors import ConfigError
from mrl.data.sources import Source, load_source
from tests.conftest import FAST

PAIRS = Source(
    hub_id="sentence-transformers/all-nli",
    hub_subset="pair",
    hub_split="train",
    local_file="bad/pairs.jsonl",
    columns=("anchor", "positive"),
)
STS = Source(
    hub_id="sentence-transformers/stsb",
    hub_split="test",
    local_file="bad/sts.jsonl",
    columns=("sentence1", "sentence2", "score"),
    local_score_max=5.0,
)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """write(name, text_or_bytes) puts a file into an empty MRL_DATA_DIR and returns its path."""
    monkeypatch.setenv("MRL_DATA_DIR", str(tmp_path))

    def write(name, content):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write


def jsonl(*rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mrl" and r.levelname == "WARNING"]


def test_rows_with_empty_or_null_texts_are_dropped_with_counts_per_column(mirror, caplog):
    path = mirror(
        "bad/pairs.jsonl",
        jsonl(
            {"anchor": "a1", "positive": "p1"},
            {"anchor": "", "positive": "p2"},
            {"anchor": "  \t", "positive": None},
            {"anchor": "a4", "positive": "p4"},
            {"anchor": None, "positive": "p5"},
            {"anchor": "a6"},  # positive absent: null
            {"anchor": "a7", "positive": "\u3000"},  # ideographic space only
        ),
    )
    with caplog.at_level(logging.WARNING, logger="mrl"):
        ds = load_source(PAIRS)
    assert ds.to_list() == [{"anchor": "a1", "positive": "p1"}, {"anchor": "a4", "positive": "p4"}]
    assert warnings_of(caplog) == [
        f"{path}: dropped 5 of 7 rows with an empty or null text (anchor: 3, positive: 3)"
    ]


def test_only_empty_rows_is_an_error(mirror, caplog):
    mirror("bad/pairs.jsonl", jsonl({"anchor": "", "positive": "p"}, {"anchor": "a"}))
    with pytest.raises(ConfigError, match=r"bad/pairs.jsonl has no row whose texts"):
        load_source(PAIRS)
    assert "dropped 2 of 2 rows" in warnings_of(caplog)[0]


@pytest.mark.parametrize("content", ["", "\n  \n", "{}\n{}\n"])
def test_a_file_without_rows_says_so(mirror, content):
    mirror("bad/pairs.jsonl", content)
    with pytest.raises(ConfigError, match=r"bad/pairs.jsonl holds no rows \(no line has any field"):
        load_source(PAIRS)


def test_exact_duplicate_rows_are_dropped_keeping_the_first(mirror, caplog):
    mirror(
        "bad/pairs.jsonl",
        jsonl(
            {"anchor": "a", "positive": "p"},
            {"anchor": "b", "positive": "q"},
            {"anchor": "a", "positive": "p"},
            {"anchor": "a", "positive": "other"},  # shares a text only: kept
            {"anchor": "b", "positive": "q"},
            {"anchor": "a", "positive": "p"},
        ),
    )
    with caplog.at_level(logging.WARNING, logger="mrl"):
        ds = load_source(PAIRS)
    assert [(r["anchor"], r["positive"]) for r in ds] == [("a", "p"), ("b", "q"), ("a", "other")]
    (message,) = warnings_of(caplog)
    assert message.endswith("pairs.jsonl: dropped 3 exact duplicate rows (3 of 6 rows left)")


def test_scored_pairs_keep_exact_duplicates_but_not_empty_texts(mirror, caplog):
    # an STS benchmark counts its duplicate pairs (STS-B test has one): dropping them would
    # make its Spearman incomparable with published numbers
    mirror(
        "bad/sts.jsonl",
        jsonl(
            {"sentence1": "s", "sentence2": "t", "score": 5},
            {"sentence1": "s", "sentence2": "t", "score": 2.5},
            {"sentence1": "", "sentence2": "t", "score": 5},
            {"sentence1": "s", "sentence2": "t", "score": 5.0},
        ),
    )
    with caplog.at_level(logging.WARNING, logger="mrl"):
        ds = load_source(STS)
    assert ds.to_list() == [
        {"sentence1": "s", "sentence2": "t", "score": 1.0},
        {"sentence1": "s", "sentence2": "t", "score": 0.5},
        {"sentence1": "s", "sentence2": "t", "score": 1.0},
    ]
    (message,) = warnings_of(caplog)
    assert message.endswith("dropped 1 of 4 rows with an empty or null text (sentence1: 1)")


def test_empty_and_duplicate_training_rows_are_counted_apart(mirror, caplog):
    mirror(
        "bad/pairs.jsonl",
        jsonl(
            {"anchor": "a", "positive": "p"},
            {"anchor": "a", "positive": ""},
            {"anchor": "a", "positive": "p"},
        ),
    )
    with caplog.at_level(logging.WARNING, logger="mrl"):
        ds = load_source(PAIRS)
    assert ds.to_list() == [{"anchor": "a", "positive": "p"}]
    first, second = warnings_of(caplog)
    assert first.endswith("dropped 1 of 3 rows with an empty or null text (positive: 1)")
    assert second.endswith("dropped 1 exact duplicate rows (1 of 3 rows left)")


def test_clean_data_is_returned_as_is_without_warnings(mirror, caplog):
    rows = [{"anchor": f"a{i}", "positive": f"p{i}"} for i in range(5)]
    mirror("bad/pairs.jsonl", jsonl(*rows))
    with caplog.at_level(logging.WARNING, logger="mrl"):
        ds = load_source(PAIRS)
    assert ds.to_list() == rows
    assert warnings_of(caplog) == []


@pytest.mark.parametrize(
    ("bad_score", "shown"),
    [('"abc"', '"abc"'), ("null", "null"), ('"3.5"', '"3.5"'), ("true", "true"), ("NaN", "nan")],
)
def test_a_score_that_is_not_a_number_names_file_line_and_field(mirror, bad_score, shown):
    good = '{"sentence1": "a", "sentence2": "b", "score": 1}\n'
    bad = '{"sentence1": "c", "sentence2": "d", "score": ' + bad_score + "}\n"
    mirror("bad/sts.jsonl", good + "\n" + good + bad + good)  # the blank line 2 still counts
    with pytest.raises(ConfigError) as err:
        load_source(STS)
    assert "bad/sts.jsonl line 4: field score is " + shown in str(err.value)
    assert "\n" not in str(err.value)


def test_a_score_absent_from_one_line_names_that_line(mirror):
    mirror(
        "bad/sts.jsonl",
        jsonl(
            {"sentence1": "a", "sentence2": "b", "score": 1},
            {"sentence1": "c", "sentence2": "d"},
        ),
    )
    with pytest.raises(ConfigError, match=r"bad/sts.jsonl line 2: field score is null, not a num"):
        load_source(STS)


def test_out_of_range_score_names_the_range_and_first_bad_line(mirror):
    rows = [{"sentence1": "a", "sentence2": "b", "score": s} for s in (1, 4, 6.5, -1)]
    mirror("bad/sts.jsonl", jsonl(*rows))
    with pytest.raises(ConfigError) as err:
        load_source(STS)
    assert "bad/sts.jsonl has scores in [-1.0, 6.5], outside [0, 5.0] (first at line 3)" in str(
        err.value
    )
    assert "set local_score_max to the file's scale" in str(err.value)  # names the config key


def test_wrong_column_names_are_still_rejected_by_name(mirror):
    mirror("bad/sts.jsonl", jsonl({"sentence1": "a", "sentence2": "b", "label": 3}))
    with pytest.raises(ConfigError, match=r"sts.jsonl lacks column\(s\) \['score'\]"):
        load_source(STS)


def test_a_text_that_is_not_a_string_names_the_field(mirror):
    mirror(
        "bad/pairs.jsonl", jsonl({"anchor": "a", "positive": "p"}, {"anchor": 7, "positive": "q"})
    )
    with pytest.raises(ConfigError, match=r"pairs.jsonl line 2: field anchor is 7, not a string"):
        load_source(PAIRS)


def test_non_utf8_bytes_name_the_line_byte_and_column(mirror):
    lines = [jsonl({"anchor": f"a{i}", "positive": f"p{i}"}).encode() for i in range(8)]
    lines[6] = b'{"anchor": "caf\xe9", "positive": "p"}\n'  # latin-1 'e acute'
    mirror("bad/pairs.jsonl", b"".join(lines))
    with pytest.raises(ConfigError) as err:
        load_source(PAIRS)
    assert str(err.value).endswith(
        "bad/pairs.jsonl could not be read as JSON Lines: line 7 is not valid UTF-8 "
        "(byte 0xe9 at column 16); re-encode the file as UTF-8."
    )


def test_a_utf8_byte_order_mark_is_accepted(mirror):
    mirror("bad/pairs.jsonl", b"\xef\xbb\xbf" + jsonl({"anchor": "a", "positive": "p"}).encode())
    assert load_source(PAIRS).to_list() == [{"anchor": "a", "positive": "p"}]


def test_a_last_line_cut_in_half_names_the_line(mirror):
    rows = jsonl(*({"anchor": f"a{i}", "positive": f"p{i}"} for i in range(3)))
    mirror("bad/pairs.jsonl", rows + '{"anchor": "a3", "posi')
    with pytest.raises(ConfigError) as err:
        load_source(PAIRS)
    message = str(err.value)
    assert (
        "bad/pairs.jsonl could not be read as JSON Lines: line 4 is cut off or not JSON" in message
    )
    assert message.endswith("(Unterminated string starting at column 18); fix or delete that line.")


def test_a_line_that_is_not_an_object_names_the_line(mirror):
    mirror("bad/pairs.jsonl", jsonl({"anchor": "a", "positive": "p"}, ["a", "p"]))
    with pytest.raises(ConfigError, match=r"pairs.jsonl line 2 is \[\"a\", \"p\"\], not an object"):
        load_source(PAIRS)


def test_bad_eval_data_ends_the_run_with_one_line(data_dir, run_main, tmp_path, capsys):
    path = data_dir / "stsb/validation.jsonl"
    path.write_bytes(path.read_bytes() + b'{"sentence1": "\xff", "sentence2": "b", "score": 1}\n')
    with pytest.raises(SystemExit) as exit_info:
        run_main(["+exp=allnli_mrl", *FAST], tmp_path / "run")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "validation.jsonl could not be read" in err[-1]
    assert "line 41 is not valid UTF-8 (byte 0xff at column 16)" in err[-1]
    assert not (tmp_path / "run").exists()
