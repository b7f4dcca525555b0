#!/usr/bin/env python3
"""Write the three generative example tasks under evals/tasks/ (deterministic: the same seed gives the same
bytes), one `{"id", "input", "output"}` object per line, ready for `edgetune build --data FILE`:

  extract-json.jsonl   a sentence about a person -> {"name", "age", "city"} as JSON    (metric auto: json)
  arith-number.jsonl   a one- or two-step word problem -> a worked line and "#### N"   (metric auto: number)
  instruct-text.jsonl  rewrite / describe / reply instructions -> one sentence         (metric auto: text)

Usage: python scripts/make_task_data.py [--rows 600] [--seed 0] [--out evals/tasks]
Standard library only; the facts are invented, so the data carries no licence beyond this repository's.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

FIRST = ["Maria", "Jonas", "Aiko", "Pedro", "Fatima", "Liam", "Chen", "Olga", "Kwame", "Sofia", "Ravi", "Emma",
         "Tomas", "Amara", "Yusuf", "Ingrid", "Mateo", "Lena", "Omar", "Hana"]
LAST = ["Silva", "Berg", "Tanaka", "Costa", "Haddad", "Walsh", "Wei", "Petrova", "Mensah", "Rossi", "Patel",
        "Novak", "Keller", "Diallo", "Demir", "Larsen", "Garcia", "Fischer", "Nasser", "Sato"]
CITIES = ["Lisbon", "Oslo", "Kyoto", "Porto", "Beirut", "Dublin", "Shanghai", "Kazan", "Accra", "Turin", "Pune",
          "Prague", "Zurich", "Dakar", "Izmir", "Bergen", "Seville", "Hamburg", "Cairo", "Osaka"]
JOBS = ["a nurse", "an engineer", "a baker", "a teacher", "a pilot", "a farmer", "a chemist", "a carpenter"]
PERSON_TEMPLATES = [
    "{name} is {age} years old and lives in {city}, where {pronoun} works as {job}.",
    "Born {age} years ago, {name} now works as {job} in {city}.",
    "{job_cap} from {city}, {name} turned {age} last spring.",
    "Meet {name}: {age}, {job}, based in {city}.",
    "In {city} you may run into {name}, {job} aged {age}.",
]
JSON_INSTRUCTION = ("Extract the person's name, age and city from the text. Answer with JSON only, with keys "
                    "\"name\" (string), \"age\" (integer) and \"city\" (string).\n\nText: ")

ITEMS = ["apples", "marbles", "stickers", "books", "coins", "shells", "pencils", "cards"]


def person(rng: random.Random, i: int) -> dict:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    age, city, job = rng.randint(19, 78), rng.choice(CITIES), rng.choice(JOBS)
    text = rng.choice(PERSON_TEMPLATES).format(name=name, age=age, city=city, job=job, job_cap=job[0].upper() + job[1:],
                                               pronoun=rng.choice(["she", "he"]))
    answer = json.dumps({"name": name, "age": age, "city": city})
    return {"id": f"json-{i}", "input": JSON_INSTRUCTION + text, "output": answer}


def word_problem(rng: random.Random, i: int) -> dict:
    who, thing = rng.choice(FIRST), rng.choice(ITEMS)
    a, b, c = rng.randint(2, 60), rng.randint(2, 40), rng.randint(2, 9)
    kind = rng.choice(["add", "sub", "mul", "two-step"])
    if kind == "add":
        q = f"{who} has {a} {thing} and gets {b} more. How many {thing} does {who} have now?"
        work, n = f"{a} + {b} = {a + b}", a + b
    elif kind == "sub":
        a = a + b  # never negative
        q = f"{who} has {a} {thing} and gives away {b}. How many {thing} are left?"
        work, n = f"{a} - {b} = {a - b}", a - b
    elif kind == "mul":
        q = f"{who} buys {c} bags with {b} {thing} in each bag. How many {thing} is that in total?"
        work, n = f"{c} * {b} = {c * b}", c * b
    else:
        q = (f"{who} has {a} {thing}, buys {c} packs of {b} {thing}, then gives {c} {thing} to a friend. "
             f"How many {thing} does {who} have?")
        work, n = f"{a} + {c} * {b} - {c} = {a + c * b - c}", a + c * b - c
    return {"id": f"num-{i}", "input": q + " End with the answer after ####.", "output": f"{work}\n#### {n}"}


ANIMALS = {"fox": ("small", "mammal", "forests", "mice"), "heron": ("tall", "bird", "wetlands", "fish"),
           "otter": ("playful", "mammal", "rivers", "crabs"), "gecko": ("tiny", "reptile", "warm rocks", "insects"),
           "owl": ("quiet", "bird", "woods", "voles"), "seal": ("sleek", "mammal", "cold coasts", "cod"),
           "toad": ("squat", "amphibian", "damp gardens", "slugs"), "bat": ("nimble", "mammal", "caves", "moths")}
PRESENT_PAST = [("walks to the market", "walked to the market"), ("writes a letter", "wrote a letter"),
                ("sings in the choir", "sang in the choir"), ("fixes the old bike", "fixed the old bike"),
                ("reads the morning paper", "read the morning paper"), ("bakes fresh bread", "baked fresh bread"),
                ("drives to the coast", "drove to the coast"), ("plants tomatoes", "planted tomatoes")]
EVENTS = ["dinner", "the concert", "the book club", "the picnic", "the workshop", "the wedding"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def instruction(rng: random.Random, i: int) -> dict:
    kind = rng.choice(["describe", "past", "decline"])
    if kind == "describe":
        animal = rng.choice(sorted(ANIMALS))
        size, cls, home, food = ANIMALS[animal]
        q = (f"Describe the {animal} in one sentence, saying what it is, where it lives and what it eats.")
        a = f"The {animal} is a {size} {cls} that lives in {home} and eats {food}."
    elif kind == "past":
        who, (now, then) = rng.choice(FIRST), rng.choice(PRESENT_PAST)
        q = f"Rewrite this sentence in the past tense: {who} {now} every day."
        a = f"{who} {then} every day."
    else:
        who, event, day = rng.choice(FIRST), rng.choice(EVENTS), rng.choice(DAYS)
        q = f"Write a one-sentence polite reply to {who} declining the invitation to {event} on {day}."
        a = f"Thank you for inviting me to {event}, {who}, but I am sorry I cannot come on {day}."
    return {"id": f"text-{i}", "input": q, "output": a}


TASKS = {"extract-json": person, "arith-number": word_problem, "instruct-text": instruction}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600, help="rows per task (default 600: 200 held out + 384 "
                                                              "trained on by edgetune's defaults, and spare)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "evals" / "tasks")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in TASKS.items():
        rng = random.Random(f"{name}-{args.seed}")  # one stream per task: adding a task changes no other file
        path = args.out / f"{name}.jsonl"
        with path.open("w") as fh:
            for i in range(args.rows):
                fh.write(json.dumps(make(rng, i)) + "\n")
        print(path)


if __name__ == "__main__":
    main()
