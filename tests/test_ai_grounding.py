"""Grounding: a model's reply is shown only if every number in it comes from the alert's facts (or converts them)."""

from __future__ import annotations

import json

import pytest

from pamd.ai.grounding import GroundingError, Phrasing, allowed_numbers, check_reply, numbers_in
from pamd.ai.prompt import SYSTEM, build_prompt, facts_digest, read_prompt
from pamd.model import Alert, Priority


def fuel_alert(**facts: object) -> Alert:
    base = {"level_pct": 14.737, "litres_left": 56.0, "capacity_l": 380.0, "range_km": 186.667,
            "distance_since_fill_km": 1080.0, "days_since_fill": 3.0, "price_per_l": 1.05, "refill_l": 324.0,
            "refill_cost": 340.2,
            "vehicle_id": "demo-v01", "vehicle_name": "Big Sky", "currency": "USD", "units": "imperial",
            "last_full_fill_at": "2026-11-26T09:53:06.000Z", "stations": [],
            "position": {"lat": 39.7892, "lon": -104.9403, "source": "user_location"}}
    return Alert(user_id="u1", kind="fuel_low", priority=Priority.MEDIUM, title="Fuel getting low",
                 body="rule text", facts=base | facts, monitor="fuel", fingerprint="fp1",
                 actions=[{"action": "log_fuel", "label": "Log a fill-up"},
                          {"action": "find_fuel", "label": "Find fuel"}])


def check_one(text: str, alert: Alert) -> Phrasing:
    """The checked entry of a reply for ``alert`` alone; raises its GroundingError."""
    (result,) = check_reply(text, [alert])
    if isinstance(result, GroundingError):
        raise result
    return result


def reply(title: str, body: str, actions: list[dict[str, object]] | None = None) -> str:
    data: dict[str, object] = {"title": title, "body": body}
    if actions is not None:
        data["actions"] = actions
    return json.dumps(data)


def test_a_faithful_reply_in_imperial_units_is_accepted() -> None:
    alert = fuel_alert()
    text = reply("Big Sky is down to about 15%",
                 "You have roughly 14.8 gal left, about 116 mi of range after 671 mi since your fill-up 3 days ago. "
                 "A full tank (85.6 gal) costs around $340.20.",
                 [{"index": 1, "label": "Find fuel now"}, {"index": 0}])
    phrased = check_one(text, alert)
    assert phrased.title == "Big Sky is down to about 15%"
    assert phrased.actions == [{"action": "find_fuel", "label": "Find fuel now"},
                               {"action": "log_fuel", "label": "Log a fill-up"}]


@pytest.mark.parametrize(("body", "bad"), [
    ("There are 4 stations within 9 miles.", "4"),  # no stations in the facts
    ("You have about 120 mi of range.", "120"),  # 116 mi rounded too far
    ("Fuel is $4.99 a gallon nearby.", "4.99"),
    ("Seven stations are close by.", "Seven"),  # numbers in words count too
])
def test_invented_numbers_are_rejected(body: str, bad: str) -> None:
    with pytest.raises(GroundingError) as err:
        check_one(reply("Fuel low", body), fuel_alert())
    assert err.value.reason == "ungrounded" and repr(bad) in str(err.value)


def test_malformed_replies_and_unoffered_actions_are_rejected() -> None:
    alert = fuel_alert()
    for text in ("Sure! Here is your alert: Fuel low", '{"title": "x"}', reply("", "body"), reply("t", "b" * 700)):
        with pytest.raises(GroundingError) as err:
            check_one(text, alert)
        assert err.value.reason == "malformed"
    with pytest.raises(GroundingError, match="action 5 was not offered"):
        check_one(reply("Fuel low", "Plan a fill-up.", [{"index": 5}]), alert)
    fenced = "```json\n" + reply("Fuel low", "Plan a fill-up soon.") + "\n```"
    assert check_one(fenced, alert).actions == alert.actions  # no choice: the offered actions as they were


def test_conversions_dates_and_percentages_are_allowed() -> None:
    alert = Alert(user_id="u", kind="storm", priority=Priority.HIGH, title="t", body="b", monitor="weather",
                  facts={"temp_max_c": 30.0, "wind_max_kmh": 80.0, "share": 0.25, "planned_date": "2026-03-15",
                         "drive_minutes": 90.0, "trip_id": 987654})
    allowed = allowed_numbers(alert)
    assert {86.0, 80.0 * 0.621371, 25.0, 15.0, 2026.0, 1.5}.issubset({round(x, 6) for x in allowed} | allowed)
    text = reply("Storm on 15 March", "Gusts near 50 mph and 86°F; leave 1.5 hours earlier, a 25% chance.")
    assert check_one(text, alert).title == "Storm on 15 March"
    with pytest.raises(GroundingError):  # ids are not shown to the model and may not appear
        check_one(reply("Trip 987654", "Storm."), alert)
    assert [n for n, _ in numbers_in("1,234.5 km, -3 °C and two stops")] == [1234.5, -3.0, 2.0]


def test_only_values_have_conversions_not_list_lengths_or_the_digits_of_a_date() -> None:
    alert = Alert(user_id="u", kind="maintenance_due", priority=Priority.HIGH, title="t", body="b",
                  monitor="maintenance", facts={"done_on": "2023-01-29", "shops": [{"name": "A"}], "score": 1,
                                                "nested": {"gap_km": -10.0, "vehicle_id": 55, "note": None}})
    allowed = allowed_numbers(alert)
    assert {1.0, 29.0, 2023.0, -10.0, 10.0, round(-10 * 0.621371, 6), 100.0} <= {round(x, 6) for x in allowed}
    assert 55.0 not in allowed  # an identifier the model never saw
    share_free = Alert(user_id="u", kind="k", priority=Priority.LOW, title="t", body="b",
                       facts={"done_on": "2023-01-29", "shops": [{"name": "A"}]})
    assert 100.0 not in allowed_numbers(share_free)  # "01" and a list of one are not a 100 % share
    with pytest.raises(GroundingError, match="'100'"):
        check_one(reply("Done on 29 January", "100% of the work is done."), share_free)


def test_the_prompt_carries_only_the_facts_and_the_readers_units() -> None:
    alert = fuel_alert()
    prompt = build_prompt([alert], max_tokens=400)
    [payload] = read_prompt(prompt.text)
    assert payload["units"] == "imperial" and payload["currency"] == "USD" and payload["priority"] == "medium"
    assert "vehicle_id" not in payload["facts"] and "lat" not in payload["facts"]["position"]
    assert payload["actions"] == [{"index": 0, "label": "Log a fill-up"}, {"index": 1, "label": "Find fuel"}]
    assert "rule text" not in prompt.text  # the rule text is not sent: the facts are the only source
    assert prompt.input_tokens == -(-len(SYSTEM) // 4) + -(-len(prompt.text) // 4)
    assert prompt.cost_usd(3.0, 15.0) == pytest.approx((prompt.input_tokens * 3 + 120 * 15) / 1e6)
    changed = fuel_alert(level_pct=12.0)
    assert facts_digest(changed) != facts_digest(alert) == facts_digest(fuel_alert())


def test_a_batch_names_each_kind_s_facts_once_and_reads_back_alert_by_alert() -> None:
    budget = Alert(user_id="u2", kind="budget_threshold", priority=Priority.HIGH, title="t", body="b",
                   monitor="budget", facts={"spent": 850.0, "n": 7, "priority": "food", "note": None,
                                            "top": [{"category": "food", "amount": 500.0}], "currency": "EUR"},
                   actions=[{"action": "view_budget"}])
    alerts = [fuel_alert(), budget, fuel_alert(level_pct=9.0, stations=None, extra_km=3.5)]
    prompt = build_prompt(alerts, max_tokens=400)
    groups = json.loads(prompt.text)["groups"]
    assert [(g["monitor"], g["kind"], len(g["alerts"])) for g in groups] == [("fuel", "fuel_low", 2),
                                                                            ("budget", "budget_threshold", 1)]
    assert groups[1]["actions"] == ["view_budget"] and groups[1]["alerts"][0][:4] == [1, "high", "metric", "EUR"]
    assert groups[0]["facts"].count("level_pct") == 1 and groups[0]["facts"][-1] == "extra_km"
    assert groups[0]["alerts"][0][-1] is None  # the first fuel alert has no extra_km
    singles = [read_prompt(build_prompt([a], max_tokens=400).text)[0] | {"n": n} for n, a in enumerate(alerts)]
    assert read_prompt(prompt.text) == singles  # what a model reads of each alert, whatever it is batched with
    back = singles[1]
    assert back["facts"] == {"spent": 850.0, "n": 7, "priority": "food",  # facts named like a row's own columns
                             "top": [{"category": "food", "amount": 500.0}]}
    assert (back["n"], back["priority"], back["currency"], back["units"]) == (1, "high", "EUR", "metric")
    assert "stations" not in singles[2]["facts"] and singles[2]["facts"]["extra_km"] == 3.5
    assert singles[0]["actions"] == [{"index": 0, "label": "Log a fill-up"}, {"index": 1, "label": "Find fuel"}]


def test_ten_alerts_of_one_kind_cost_a_third_less_together_than_their_payloads_alone() -> None:
    ten = [fuel_alert(level_pct=10.0 + i, refill_l=300.0 + i) for i in range(10)]
    batched = len(build_prompt(ten, max_tokens=400).text)
    alone = sum(len(build_prompt([a], max_tokens=400).text) for a in ten)
    assert batched < 0.67 * alone


def test_a_batch_reply_is_checked_entry_by_entry() -> None:
    good, other = fuel_alert(), fuel_alert(level_pct=9.0)
    text = json.dumps({"alerts": [
        {"n": 1, "title": "Fuel at 9%", "body": "About 9% left: refuel today."},
        {"n": 0, "title": "Fuel at 15%", "body": "There are 4 stations near you."},
    ]})
    first, second = check_reply(text, [good, other])
    assert isinstance(first, GroundingError) and first.reason == "ungrounded"
    assert isinstance(second, Phrasing) and second.title == "Fuel at 9%"
    missing = check_reply(json.dumps({"alerts": [{"n": 0, "title": "t", "body": "b"}]}), [good, other])
    assert isinstance(missing[1], GroundingError) and "no entry for alert 1" in str(missing[1])
    assert all(isinstance(r, GroundingError) and r.reason == "malformed" for r in check_reply("nope", [good, other]))
    prompt = build_prompt([good, other], max_tokens=400)
    assert [a["n"] for a in read_prompt(prompt.text)] == [0, 1] and prompt.output_tokens == 240
    assert prompt.input_tokens < 2 * build_prompt([good], max_tokens=400).input_tokens  # instructions paid once
