from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from feedback.importing import ImportFileError
from feedback.models import Candidate, Item, Prompt, PromptImport
from feedback.services.imports import candidates_import_file, prompts_import_file

pytestmark = pytest.mark.django_db


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_prompt_and_messages(tmp_path, project_factory):
    project = project_factory()
    f = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "What is Python?", "topic": "code"},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
        ],
    )
    report = prompts_import_file(project=project, path=f)
    assert report.rows_imported == 2
    p = Prompt.objects.get(text="What is Python?")
    assert p.messages == [{"role": "user", "content": "What is Python?"}]
    assert p.metadata == {"topic": "code"} and p.source_import == report


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ("{not json", "line 3: not valid JSON"),
        (json.dumps({"prompt": 7}), "line 3, field 'prompt': must be a string"),
        (json.dumps({"text": "x"}), "line 3, field 'prompt': missing"),
        (json.dumps({"messages": [{"role": "bot", "content": "x"}]}), "line 3, field 'messages'"),
        (
            json.dumps(
                {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
            ),
            "line 3, field 'messages': the last message must be from the user",
        ),
    ],
)
def test_broken_line_fails_whole_file_and_names_line(tmp_path, project_factory, bad, needle):
    project = project_factory()
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "one"}, {"prompt": "two"}, bad, {"prompt": "four"}])
    with pytest.raises(ImportFileError) as err:
        prompts_import_file(project=project, path=f)
    assert needle in str(err.value)
    assert Prompt.objects.count() == 0 and PromptImport.objects.count() == 0


def test_csv_broken_row_names_line(tmp_path, project_factory):
    project = project_factory()
    f = tmp_path / "p.csv"
    f.write_text('prompt,topic\n"What is a CSV?",files\n"",empty\n')
    with pytest.raises(ImportFileError, match=r"line 3, field 'prompt': is empty"):
        prompts_import_file(project=project, path=f)
    assert Prompt.objects.count() == 0


def test_csv_extra_columns_become_metadata(tmp_path, project_factory):
    project = project_factory()
    f = tmp_path / "p.csv"
    f.write_text('prompt,topic\n"What is a CSV?",files\n')
    prompts_import_file(project=project, path=f)
    assert Prompt.objects.get().metadata == {"topic": "files"}


def test_datasets_folder(tmp_path, project_factory):
    from datasets import Dataset

    project = project_factory()
    Dataset.from_list([{"prompt": "alpha?"}, {"prompt": "beta?"}, {"prompt": "ALPHA?"}]).save_to_disk(
        tmp_path / "ds"
    )
    report = prompts_import_file(project=project, path=tmp_path / "ds")
    assert (report.rows_imported, report.duplicates_dropped) == (2, 1)


def test_duplicates_dropped_and_counted(tmp_path, project_factory):
    project = project_factory()
    f = write_jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": "Same question?"}, {"prompt": "same   QUESTION?"}, {"prompt": "Other"}],
    )
    r1 = prompts_import_file(project=project, path=f)
    assert (r1.rows_imported, r1.duplicates_dropped) == (2, 1)
    r2 = prompts_import_file(project=project, path=f)
    assert (r2.rows_imported, r2.duplicates_dropped) == (0, 3)
    assert Prompt.objects.count() == 2


@pytest.mark.parametrize(
    ("policy", "kept", "content"),
    [
        ("flag", 2, "Mail me at jo@example.org"),
        ("redact", 2, "Mail me at [EMAIL]"),
        ("drop", 1, None),
    ],
)
def test_pii_policy(tmp_path, project_factory, policy, kept, content):
    project = project_factory(pii_policy=policy)
    f = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": "Mail me at jo@example.org"}, {"prompt": "Clean prompt"}]
    )
    report = prompts_import_file(project=project, path=f)
    assert Prompt.objects.count() == kept
    counts = {"flag": report.pii_flagged, "redact": report.pii_redacted, "drop": report.pii_dropped}
    assert counts[policy] == 1 and sum(counts.values()) == 1
    if content:
        p = Prompt.objects.exclude(text="Clean prompt").get()
        assert p.text == content and p.pii_kinds == ["email"]


def test_import_candidates_builds_items(tmp_path, project_factory):
    project = project_factory(task_kind="pairwise")
    f = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"prompt": "Q1", "response": "a", "model": "m1"},
            {"prompt": "Q1", "response": "b", "model": "m2"},
            {"prompt": "Q1", "response": "b", "model": "m2"},
            {"prompt": "Q2", "response": "c"},
        ],
    )
    r = candidates_import_file(project=project, path=f, model_name="fallback")
    assert (r.candidates_created, r.duplicates_dropped, r.prompts_created, r.items_created) == (3, 1, 2, 1)
    item = Item.objects.get()
    assert {c.model_version.name for c in item.candidates.all()} == {"m1", "m2"}
    assert Candidate.objects.filter(model_version__name="fallback").count() == 1


def test_import_candidates_without_model_fails_whole_file(tmp_path, project_factory):
    project = project_factory()
    f = write_jsonl(
        tmp_path / "c.jsonl",
        [{"prompt": "Q1", "response": "a", "model": "m"}, {"prompt": "Q2", "response": "b"}],
    )
    with pytest.raises(ImportFileError, match="line 2, field 'model'"):
        candidates_import_file(project=project, path=f)
    assert Candidate.objects.count() == 0 and Prompt.objects.count() == 0


def test_command_reports_and_fails_cleanly(tmp_path, project_factory, capsys):
    project_factory(name="Cmd")
    good = write_jsonl(tmp_path / "g.jsonl", [{"prompt": "a"}, {"prompt": "A"}])
    call_command("import_prompts", str(good), project="cmd")
    assert "Imported 1 of 2 prompts" in capsys.readouterr().out
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "x"}, "oops"])
    with pytest.raises(CommandError, match="line 2"):
        call_command("import_prompts", str(bad), project="cmd")
    assert Prompt.objects.count() == 1


def test_nul_bytes_are_stored_as_replacement_characters(tmp_path, project_factory):
    project = project_factory()
    f = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "Q\u0000?", "response": "bad\u0000byte", "model": "m"}])
    candidates_import_file(project=project, path=f)
    c = Candidate.objects.get()
    assert c.text == "bad\ufffdbyte" and c.prompt.text == "Q\ufffd?"
