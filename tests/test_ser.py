"""Slot error rate: hand-written outputs for every slot, common paraphrases, and each error kind."""

from __future__ import annotations

import pytest

from superlora.tasks.e2e.ser import check_output, slot_error_rate


def _errors(mr: str, output: str) -> tuple[list[str], list[str], list[str]]:
    check = check_output(mr, output)
    return check.missing, check.wrong, check.added


def _ok(mr: str, output: str) -> None:
    assert _errors(mr, output) == ([], [], []), (mr, output)


# -----------------------------------------------------------------------------
# Every slot, said in its usual ways


@pytest.mark.parametrize(
    "output",
    ["The Vaults is here.", "the vaults is here.", "Vaults is here.", "THE VAULTS is here."],
)
def test_name(output):
    _ok("name[The Vaults]", output)


@pytest.mark.parametrize(
    ("near", "output"),
    [
        ("Café Adriatic", "It is near Café Adriatic."),
        ("Café Adriatic", "It is near Cafe Adriatic."),
        ("The Portland Arms", "It is close to the Portland Arms."),
        ("Express by Holiday Inn", "It is by the Express by Holiday Inn."),
        ("Raja Indian Cuisine", "You will find it near Raja Indian Cuisine."),
    ],
)
def test_near(near, output):
    _ok(f"name[Zizzi], near[{near}]", "Zizzi. " + output)


def test_venue_words_are_not_read_as_other_slots():
    # "Café", "Indian", "Burger", "Bar", "Inn" inside venue names are not eatType/food mentions.
    _ok("name[Zizzi], near[Raja Indian Cuisine]", "Zizzi is near Raja Indian Cuisine.")
    _ok("name[Zizzi], near[Café Rouge]", "Zizzi is near Café Rouge.")
    _ok("name[Zizzi], near[Yippee Noodle Bar]", "Zizzi is near Yippee Noodle Bar.")
    _ok("name[Browns Cambridge], near[Express by Holiday Inn]", "Brown's Cambridge is near Express by Holiday Inn.")


@pytest.mark.parametrize(
    ("value", "output"),
    [
        ("coffee shop", "A coffee shop."),
        ("coffee shop", "A coffee-shop."),
        ("coffee shop", "A small café."),
        ("coffee shop", "A cafe."),
        ("pub", "A pub."),
        ("pub", "A friendly bar."),
        ("restaurant", "A restaurant."),
        ("restaurant", "A nice eatery."),
    ],
)
def test_eat_type(value, output):
    _ok(f"name[X], eatType[{value}]", "X. " + output)


def test_restaurant_is_generic_and_never_wrong_or_added():
    _ok("name[Zizzi]", "Zizzi is a restaurant.")
    assert _errors("name[Zizzi], eatType[pub]", "Zizzi is a restaurant.") == (["eatType[pub]"], [], [])


@pytest.mark.parametrize(
    ("value", "output"),
    [
        ("Chinese", "Chinese food"),
        ("English", "English food"),
        ("English", "British cuisine"),
        ("Fast food", "fast food"),
        ("Fast food", "fast-food"),
        ("French", "French dishes"),
        ("Indian", "Indian food"),
        ("Indian", "curries"),
        ("Italian", "Italian food"),
        ("Italian", "pasta and pizza"),
        ("Japanese", "Japanese food"),
        ("Japanese", "sushi"),
    ],
)
def test_food(value, output):
    _ok(f"name[X], food[{value}]", f"X serves {output}.")


@pytest.mark.parametrize(
    ("value", "output"),
    [
        ("cheap", "It is cheap."),
        ("cheap", "It has low prices."),
        ("cheap", "It is low-priced."),
        ("cheap", "It is inexpensive."),
        ("cheap", "It is not expensive."),
        ("cheap", "Prices are under £20."),
        ("less than £20", "It costs less than £20."),
        ("less than £20", "It is cheap."),
        ("moderate", "It is moderately priced."),
        ("moderate", "It has average prices."),
        ("moderate", "The price range is moderate."),
        ("moderate", "It costs £20-£25."),
        ("£20-25", "It costs £20-25."),
        ("£20-25", "It costs between £20 and £25."),
        ("£20-25", "It costs 20 to 25 pounds."),
        ("high", "It is expensive."),
        ("high", "It is high priced."),
        ("high", "It has a high price range."),
        ("high", "Its prices are high."),
        ("more than £30", "It costs more than £30."),
        ("more than £30", "Meals cost over £30."),
        ("more than £30", "It is pricey."),
    ],
)
def test_price_range(value, output):
    _ok(f"name[X], priceRange[{value}]", "X. " + output)


@pytest.mark.parametrize(
    ("value", "output"),
    [
        ("low", "It has a low customer rating."),
        ("low", "It is poorly rated."),
        ("low", "Its rating is low."),
        ("low", "It is rated 1 out of 5."),
        ("1 out of 5", "It has a customer rating of 1 out of 5."),
        ("1 out of 5", "It has one star."),
        ("1 out of 5", "It has a low rating."),
        ("average", "It has an average customer rating."),
        ("average", "Customers rate it average."),
        ("average", "Its customer rating is average."),
        ("3 out of 5", "It is rated 3 out of 5."),
        ("3 out of 5", "It has a 3 star rating."),
        ("3 out of 5", "It is rated three out of five."),
        ("high", "It is highly rated."),
        ("high", "It has a high customer rating."),
        ("high", "It has excellent reviews."),
        ("5 out of 5", "It is rated 5 out of 5."),
        ("5 out of 5", "It has five stars."),
        ("5 out of 5", "It is highly rated."),
    ],
)
def test_customer_rating(value, output):
    _ok(f"name[X], customer rating[{value}]", "X. " + output)


def test_high_price_and_high_rating_are_told_apart():
    mr = "name[X], priceRange[high], customer rating[high]"
    _ok(mr, "X is expensive and highly rated.")
    _ok(mr, "X has a high price range and a high customer rating.")
    assert _errors(mr, "X has a high customer rating.") == (["priceRange[high]"], [], [])
    assert _errors(mr, "X is high priced.") == (["customer rating[high]"], [], [])


@pytest.mark.parametrize(
    ("value", "output"),
    [
        ("city centre", "in the city centre"),
        ("city centre", "in the city center"),
        ("city centre", "in the centre of the city"),
        ("city centre", "downtown"),
        ("riverside", "in the riverside area"),
        ("riverside", "by the river"),
        ("riverside", "on the river side"),
    ],
)
def test_area(value, output):
    _ok(f"name[X], area[{value}]", f"X is {output}.")


@pytest.mark.parametrize(
    ("value", "output"),
    [
        ("yes", "It is family friendly."),
        ("yes", "It is family-friendly."),
        ("yes", "It is kid friendly."),
        ("yes", "It is children-friendly."),
        ("yes", "Children are welcome."),
        ("yes", "It welcomes families."),
        ("yes", "It is good for the whole family."),
        ("no", "It is not family friendly."),
        ("no", "It is not family-friendly."),
        ("no", "It isn't kid friendly."),
        ("no", "It is non family-friendly."),
        ("no", "It is not very child friendly."),
        ("no", "It is adults only."),
        ("no", "It is an adult-only venue."),
        ("no", "It is not suitable for children."),
        ("no", "Children are not welcome."),
        ("no", "It does not allow kids."),
        ("no", "It has no kids area. It is not a place for families."),
    ],
)
def test_family_friendly(value, output):
    _ok(f"name[X], familyFriendly[{value}]", "X. " + output)


def test_negation_only_applies_within_its_clause():
    _ok("name[X], priceRange[cheap], familyFriendly[yes]", "X is not expensive, and it is family friendly.")
    assert _errors("name[X], familyFriendly[yes]", "X is not family friendly.") == (
        [],
        ["familyFriendly[yes] -> no"],
        [],
    )


# -----------------------------------------------------------------------------
# Error kinds and the corpus rate


def test_full_mr_realised_correctly():
    mr = (
        "name[The Vaults], eatType[pub], food[Italian], priceRange[more than £30], customer rating[5 out of 5], "
        "area[city centre], familyFriendly[no], near[Café Adriatic]"
    )
    _ok(mr, "The Vaults is an Italian pub in the city centre near Café Adriatic. It costs more than £30, "
        "is rated 5 out of 5 and is not family-friendly.")  # fmt: skip


def test_missing_wrong_and_added():
    mr = "name[The Vaults], eatType[pub], food[Italian], area[riverside], near[Café Adriatic]"
    missing, wrong, added = _errors(mr, "The Vaults is a French pub in the city centre. It is cheap.")
    assert missing == ["near[Café Adriatic]"]
    assert wrong == ["food[Italian] -> french", "area[riverside] -> city centre"]
    assert added == ["priceRange[low]"]


def test_wrong_and_added_venues():
    assert _errors("name[Zizzi], near[Avalon]", "Zizzi is near Burger King.") == (
        [],
        ["near[Avalon] -> Burger King"],
        [],
    )
    assert _errors("name[Zizzi]", "Zizzi is near Burger King.") == ([], [], ["near[Burger King]"])
    assert _errors("name[Zizzi], near[Avalon]", "It is near Avalon.") == (["name[Zizzi]"], [], [])


def test_repeated_slot_in_cleaned_mrs():
    _ok("name[X], eatType[pub], eatType[restaurant]", "X is a pub and restaurant.")
    assert _errors("name[X], eatType[pub], eatType[coffee shop]", "X is a pub.") == (["eatType[coffee shop]"], [], [])


def test_corpus_rate_counts_every_error_over_all_slots():
    report = slot_error_rate(
        ["name[A], eatType[pub]", "name[B], area[riverside], familyFriendly[yes]"],
        ["A is a pub.", "B is in the city centre. It is cheap."],
    )
    # Second output: area wrong, familyFriendly missing, priceRange added -> 3 errors over 5 slots.
    assert (report.missing, report.wrong, report.added, report.slots) == (1, 1, 1, 5)
    assert report.rate == pytest.approx(3 / 5)
    assert report.examples[0].errors == 0 and report.examples[1].errors == 3
    assert report.summary()["SER"] == pytest.approx(0.6)


@pytest.mark.real
def test_tgen_ser_is_low(e2e_dir):
    import csv

    with (e2e_dir / "reference-output" / "tgen-test-output.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    report = slot_error_rate([mr for mr, _ in rows], [out for _, out in rows])
    # TGen is a strong baseline: a few percent of slots go wrong, mostly dropped familyFriendly.
    assert 0.01 < report.rate < 0.06
    assert report.slots == 4352
