"""The rules file: defaults documented = defaults in code, every problem reported with its key
path, environment overrides win, and `streamer config check`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamer import rules, settings
from streamer.cli import main
from streamer.core.config import ScoringConfig
from streamer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_default_file_is_exactly_the_code_defaults():
    assert rules.load(rules.DEFAULT_FILE) == ScoringConfig()
    assert rules.parse({}) == ScoringConfig()


def test_the_readme_shows_the_default_file_verbatim():
    readme = (ROOT / "README.md").read_text()
    assert rules.DEFAULT_FILE.read_text().strip() in readme


def test_a_file_changes_only_what_it_names():
    config = rules.parse(
        {
            "segments": {"lifecycle": {"lapse_days": 200}, "churn_band": {"scores": ["churn_risk_learned", "churn_risk"]}},
            "triggers": {"win_back": {"enabled": False}, "onboarding": {"steps_days": [0, 2]}},
        }
    )
    assert config.lapse_days == 200 and config.at_risk_threshold == 0.6
    assert config.churn_band.scores == ("churn_risk_learned", "churn_risk") and config.churn_band.hysteresis == 0.05
    assert not config.triggers["win_back"].enabled and config.triggers["vip_welcome"].enabled
    assert config.triggers["onboarding"].days == (0.0, 2.0) and config.triggers["onboarding"].channel == "email"


def assert_problems(doc: dict, *expected: str) -> None:
    """``doc`` is refused with a message that lists every one of ``expected``."""
    with pytest.raises(ConfigError) as caught:
        rules.parse(doc)
    message = str(caught.value)
    for line in expected:
        assert line in message, (line, message)


def test_every_problem_is_reported_with_its_path():
    doc = {
        "scores": {"annual_discount_rate": "ten percent"},
        "segments": {
            "families": ["churn_band", "loyalty"],
            "churn_band": {"hysterisis": 0.1, "bands": {"high": 0.3, "low": 0.6}},
            "value_tier": {"tiers": {"top": 0.5, "rest": 0.1}},
        },
        "triggers": {"onboarding": {"steps_days": [0, 7, 3], "channel": "sms"}, "vip": {}, "overdue": {"factor": -1}},
        "extra": 1,
    }
    assert_problems(
        doc,
        "extra: unknown key",
        "scores.annual_discount_rate: expected a number, got 'ten percent'",
        "segments.families: unknown 'loyalty'",
        "segments.churn_band.hysterisis: unknown key (did you mean 'hysteresis'?)",
        "segments.churn_band.bands: lowest values must strictly decrease",
        "segments.value_tier.tiers: the last band ('rest') must start at 0",
        "triggers.vip: unknown key",
        "triggers.onboarding.channel: expected one of email, onsite, any, got 'sms'",
        "triggers.onboarding.steps_days: steps must be in increasing order",
        "triggers.overdue.factor: must be greater than 0, got -1",
    )


def test_advocate_tiers_must_exist_and_booleans_are_not_numbers():
    with pytest.raises(ConfigError, match="value_tiers: unknown 'platinum'"):
        rules.parse({"triggers": {"advocate_invitation": {"value_tiers": ["platinum"]}}})
    with pytest.raises(ConfigError, match="loyal_orders: expected an integer, got True"):
        rules.parse({"segments": {"lifecycle": {"loyal_orders": True}}})


def test_a_file_whose_rules_could_never_fire_is_refused():
    """Each of these is valid in its own section and silently did nothing before: a churn
    score that does not exist (no churn band, no reactivation), goal keywords the word-by-word
    match can never find, triggers on a family that is off, invitation tiers renamed away."""
    doc = {
        "segments": {
            "families": ["engagement", "goal", "advocate"],
            "value_tier": {"tiers": {"vip": 0.9, "mid": 0.5, "low": 0.0}},
            "churn_band": {"scores": ["churn_rsk"]},
            "goal": {"categories": {"studio": ["home studio", "mixing-desk", "studio"]}},
        }
    }
    assert_problems(
        doc,
        "segments.churn_band.scores: unknown 'churn_rsk' (did you mean 'churn_risk'?)",
        "segments.goal.categories.studio: keywords are single words of letters and digits; 'home studio', 'mixing-desk' would never match",
        "triggers.reactivation: needs the 'churn_band' family in segments.families",
        "triggers.advocate_invitation: needs the 'community' family in segments.families",
        "triggers.advocate_invitation.value_tiers: names tiers 'top', 'high' that segments.value_tier.tiers does not have (vip, mid, low)",
    )
    # The same file is fine once the triggers that cannot work are off or pointed right.
    doc["segments"]["churn_band"]["scores"] = ["churn_risk_learned", "churn_risk"]
    doc["segments"]["goal"]["categories"]["studio"] = ["studio", "mixing"]
    doc["triggers"] = {"reactivation": {"enabled": False}, "advocate_invitation": {"enabled": False}}
    assert rules.parse(doc).value_tiers[0] == ("vip", 0.9)
    doc["segments"]["families"] = ["churn_band", "community"]
    doc["triggers"] = {"advocate_invitation": {"value_tiers": ["vip"]}}
    assert rules.parse(doc).triggers["advocate_invitation"].value_tiers == ("vip",)


def test_empty_lists_and_single_bands_that_leave_a_rule_with_nothing_to_do_are_refused():
    doc = {
        "segments": {
            "churn_band": {"scores": [], "bands": {"high": 0.0}},
            "value_tier": {"tiers": {"everyone": 0.0}},
            "goal": {"categories": {"learn": []}},
        },
        "triggers": {"advocate_invitation": {"value_tiers": []}},
    }
    assert_problems(
        doc,
        "segments.churn_band.scores: is empty: the churn band needs a score to band (or leave churn_band out of segments.families)",
        "segments.churn_band.bands: needs at least two bands: with one, every customer is in it and nobody ever changes band",
        "segments.value_tier.tiers: needs at least two bands: with one, every customer is in it and nobody ever changes band",
        "segments.goal.categories.learn: is empty: a category without keywords matches no goal",
        "triggers.advocate_invitation.value_tiers: is empty: nobody could be invited (or set enabled = false)",
    )


def test_bad_toml_and_missing_file_say_so(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("x = [\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        rules.load(bad)
    with pytest.raises(ConfigError, match="No such file"):
        rules.load(tmp_path / "missing.toml")


def test_the_worker_reads_the_file_and_environment_overrides_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "rules.toml"
    path.write_text("[segments.lifecycle]\nlapse_days = 200\nat_risk_threshold = 0.7\n[triggers.win_back]\nenabled = false\n")
    monkeypatch.setenv("STREAMER_CONFIG", str(path))
    monkeypatch.setenv("AT_RISK_THRESHOLD", "0.8")
    loaded = settings.load().scoring
    assert (loaded.lapse_days, loaded.at_risk_threshold, loaded.triggers["win_back"].enabled) == (200, 0.8, False)
    monkeypatch.setenv("STREAMER_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="missing.toml"):
        settings.load()


def test_clock_setting(monkeypatch: pytest.MonkeyPatch):
    assert settings.load().clock == "event"
    monkeypatch.setenv("CLOCK", "wall")
    assert settings.load().clock == "wall"
    monkeypatch.setenv("CLOCK", "sundial")
    with pytest.raises(ConfigError, match="CLOCK='sundial'"):
        settings.load()


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["config", "check", str(rules.DEFAULT_FILE)]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out and "trigger upsell_advanced: on, email, cooldown 90 days, days 30" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[triggers.onboarding]\nchannel = "sms"\n')
    assert main(["config", "check", str(bad)]) == 2
    assert "triggers.onboarding.channel" in capsys.readouterr().err


def test_config_check_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "streamer", "config", "check", str(rules.DEFAULT_FILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "families on: churn_band, engagement, community, goal, advocate" in done.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMER_CONFIG": "/nonexistent/rules.toml"}, "streamer worker: rules file /nonexistent/rules.toml: No such file or directory"),
        ({"DISCOUNT_RATE": "nan"}, "streamer worker: DISCOUNT_RATE='nan' must be a finite number"),
        ({"LOG_LEVEL": "verbose"}, "streamer worker: LOG_LEVEL='verbose': use one of debug, info, warning, error, critical"),
    ],
)
def test_a_worker_with_a_bad_setting_says_what_in_one_line_and_exits_2(env: dict[str, str], message: str):
    """Before the broker is even looked for (the bootstrap below is a closed port), and with no
    traceback around the message: what an operator reads in a crash-looping pod's log."""
    done = subprocess.run(
        [sys.executable, "-m", "streamer", "worker"],
        env={**os.environ, "KAFKA_BOOTSTRAP": "127.0.0.1:9", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_purchase_day_timezone_is_an_iana_zone():
    assert rules.parse({"scores": {"purchase_day_timezone": "Europe/Berlin"}}).purchase_day_timezone == "Europe/Berlin"
    assert_problems(
        {"scores": {"purchase_day_timezone": "CET+1"}},
        "scores.purchase_day_timezone: unknown time zone 'CET+1' (an IANA name such as 'Europe/Berlin')",
    )
    assert_problems({"scores": {"purchase_day_timezone": 5}}, "scores.purchase_day_timezone: expected a time zone name such as 'Europe/Berlin', got 5")


def test_a_rules_file_that_is_no_utf8_is_refused_in_one_line(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_bytes(b"[scores]\nannual_discount_rate = 0.1 # \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 38\)"):
        rules.load(path)
