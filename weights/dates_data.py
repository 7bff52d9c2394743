"""dates_data.py - seeded generator of dates written the way people write them, paired with ISO 8601.

One function, `sample(rng)`, draws a valid calendar date between 1900-01-01 and 2099-12-31 and
writes it in one of many human forms; the training script, the tests and `pytransformer verify`
all use it, so they agree on what "a date" is. Forms covered:

  word forms   day-month-year ("21 Nov. 2026", "Saturday, the 21st of November, 2026") and
               month-day-year ("November 21, 2026", "nov 21 26", "Sat. Nov 21st 2026");
               full or abbreviated month names (with or without a trailing dot), optional
               weekday (full or abbreviated, always the true weekday of the date), ordinal
               suffixes, "the ... of ...", commas or none
  numeric      day.month.year ("21.11.2026", "1.2.03"), month/day/year, US ("11/21/2026"),
               year-month-day ("2026-11-21", "2026-1-5")
  everywhere   upper, lower, title and random mixed case; extra spaces; two-digit years

A two-digit year yy means 19yy for yy >= 50 and 20yy for yy < 50, so two-digit forms are only
drawn for years 1950-2049 (the rest of 1900-2099 cannot be written that way unambiguously).

The held-out test set is `heldout()`: 2,000 distinct strings from their own seed. Training draws
from `training_stream()`, which skips every string of the held-out set (and of the validation
set used to watch training), so the two never share an input.
"""
import datetime
import random

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
MONTH_ABBREVIATIONS = [["Jan"], ["Feb"], ["Mar"], ["Apr"], ["May"], ["Jun"], ["Jul"], ["Aug"],
                       ["Sep", "Sept"], ["Oct"], ["Nov"], ["Dec"]]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEEKDAY_ABBREVIATIONS = [["Mon"], ["Tue", "Tues"], ["Wed"], ["Thu", "Thur", "Thurs"], ["Fri"],
                         ["Sat"], ["Sun"]]

FIRST_DAY = datetime.date(1900, 1, 1)
LAST_DAY = datetime.date(2099, 12, 31)
TWO_DIGIT_YEARS = (1950, 2049)          # the century window of two-digit years

# Seeds of the fixed sets; training uses its own seed (train_dates.py --seed).
HELDOUT_SEED = 20261121
HELDOUT_SIZE = 2000
VALIDATION_SEED = 7
VALIDATION_SIZE = 1000

# Every character the generator can emit (the model's source alphabet).
ALPHABET = " ,-./0123456789" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"


def expand_two_digit_year(yy):
    """The four-digit year a person means by a two-digit year (50-99 -> 19yy, 00-49 -> 20yy)."""
    return 1900 + yy if yy >= 50 else 2000 + yy


def ordinal(day):
    if 11 <= day % 100 <= 13:
        return f"{day}th"
    return f"{day}" + {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def random_date(rng):
    """A uniformly drawn valid calendar date in [1900-01-01, 2099-12-31]."""
    span = (LAST_DAY - FIRST_DAY).days
    return FIRST_DAY + datetime.timedelta(days=rng.randint(0, span))


def _year_text(rng, year, two_digit_share):
    if TWO_DIGIT_YEARS[0] <= year <= TWO_DIGIT_YEARS[1] and rng.random() < two_digit_share:
        return f"{year % 100:02d}"
    return str(year)


def _weekday_text(rng, date):
    if rng.random() < 0.45:
        name = WEEKDAYS[date.weekday()]
    else:
        name = rng.choice(WEEKDAY_ABBREVIATIONS[date.weekday()])
        if rng.random() < 0.3:
            name += "."
    return name + ("," if rng.random() < 0.6 else "") + " "


def _month_text(rng, month):
    if rng.random() < 0.45:
        return MONTHS[month - 1]
    name = rng.choice(MONTH_ABBREVIATIONS[month - 1])
    return name + ("." if rng.random() < 0.4 else "")


def _day_text(rng, day, allow_ordinal=True):
    """(text, is_ordinal)"""
    if allow_ordinal and rng.random() < 0.45:
        return ordinal(day), True
    return (f"{day:02d}" if rng.random() < 0.15 else str(day)), False


def _word_form(rng, date):
    month = _month_text(rng, date.month)
    day, is_ordinal = _day_text(rng, date.day)
    year = _year_text(rng, date.year, 0.35)
    comma = "," if rng.random() < 0.5 else ""
    if rng.random() < 0.5:                                    # day month year
        the = "the " if is_ordinal and rng.random() < 0.4 else ""
        of = " of" if (is_ordinal or the) and rng.random() < 0.6 else ""
        text = f"{the}{day}{of} {month}{comma} {year}"
    else:                                                     # month day year
        the = "the " if is_ordinal and rng.random() < 0.15 else ""
        text = f"{month} {the}{day}{comma} {year}"
    return text


def _pad(rng, value, share):
    return f"{value:02d}" if rng.random() < share else str(value)


def _numeric_form(rng, date):
    kind = rng.random()
    if kind < 0.35:                                           # day.month.year
        year = _year_text(rng, date.year, 0.3)
        sep = ". " if rng.random() < 0.08 else "."
        return sep.join([_pad(rng, date.day, 0.6), _pad(rng, date.month, 0.6), year])
    if kind < 0.7:                                            # month/day/year (US)
        year = _year_text(rng, date.year, 0.3)
        return "/".join([_pad(rng, date.month, 0.5), _pad(rng, date.day, 0.5), year])
    pad = 0.85                                                # year-month-day, four-digit year
    return "-".join([str(date.year), _pad(rng, date.month, pad), _pad(rng, date.day, pad)])


def _recase(rng, text):
    r = rng.random()
    if r < 0.45:
        return text
    if r < 0.65:
        return text.lower()
    if r < 0.82:
        return text.upper()
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


def _respace(rng, text):
    """Sometimes double a space, drop the space after a comma, or add spaces at the ends."""
    if rng.random() < 0.2:
        parts = text.split(" ")
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(parts))
            parts[i] = parts[i] + " " * rng.randint(1, 2) if i < len(parts) - 1 else parts[i]
        text = " ".join(parts)
    if rng.random() < 0.05:
        text = text.replace(", ", ",", 1)
    if rng.random() < 0.06:
        text = " " * rng.randint(1, 2) + text
    if rng.random() < 0.06:
        text = text + " " * rng.randint(1, 2)
    return text


def sample(rng):
    """One (human text, ISO 8601 text) pair drawn with `rng` (a random.Random)."""
    date = random_date(rng)
    if rng.random() < 0.62:
        text = _word_form(rng, date)
        weekday_share = 0.35
    else:
        text = _numeric_form(rng, date)
        weekday_share = 0.08
    if rng.random() < weekday_share:
        text = _weekday_text(rng, date) + text
    text = _respace(rng, _recase(rng, text))
    return text, date.isoformat()


def generate(n, seed, exclude=(), distinct=True):
    """n pairs from `seed`; strings in `exclude` are skipped, and with distinct=True no string repeats."""
    rng = random.Random(seed)
    exclude = set(exclude)
    seen = set()
    out = []
    while len(out) < n:
        text, iso = sample(rng)
        if text in exclude or (distinct and text in seen):
            continue
        seen.add(text)
        out.append((text, iso))
    return out


def heldout(n=HELDOUT_SIZE):
    """The held-out test set: distinct strings the training never sees."""
    return generate(n, HELDOUT_SEED)


def validation(n=VALIDATION_SIZE):
    """Used to watch training (never to report accuracy); disjoint from the held-out set."""
    return generate(n, VALIDATION_SEED, exclude={t for t, _ in heldout()})


def training_stream(seed):
    """Endless training pairs from `seed`, skipping every held-out and validation string."""
    rng = random.Random(seed)
    excluded = {t for t, _ in heldout()} | {t for t, _ in validation()}
    while True:
        text, iso = sample(rng)
        if text not in excluded:
            yield text, iso

