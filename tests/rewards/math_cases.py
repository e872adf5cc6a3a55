"""Math answer cases in the formats real datasets and model responses use, with human verdicts.

Each case is ``(response, gold, expected, family)``: ``expected`` is what a careful grader would say.
Golds are written as datasets write them (MATH/GSM8K style: bare LaTeX or plain numbers), responses
as models write them (``\\boxed{}`` at the end of long reasoning, "the answer is …", a bare final
expression). Shared by the agreement test and ``benchmarks/math_checker.py``.
"""

from __future__ import annotations

import random

Case = tuple[str, str, bool, str]

# (gold, [equivalent forms], [non-equivalent forms])
FAMILIES: dict[str, list[tuple[str, list[str], list[str]]]] = {
    "integer": [
        ("42", ["42", "42.0", "+42", "\\text{42}"], ["24", "-42", "4.2"]),
        ("-7", ["-7", "- 7", "-7.00"], ["7", "-8"]),
        ("0", ["0", "0.0"], ["1", "-1"]),
    ],
    "fraction": [
        ("\\frac{3}{4}", ["\\frac{3}{4}", "\\dfrac{3}{4}", "3/4", "0.75", "\\frac{6}{8}", "\\tfrac34"], ["\\frac{4}{3}", "0.7", "\\frac{3}{5}"]),
        ("-\\frac{1}{2}", ["-\\frac{1}{2}", "\\frac{-1}{2}", "-0.5", "-1/2"], ["\\frac{1}{2}", "-2"]),
        ("\\frac{7}{3}", ["\\frac{7}{3}", "2\\frac{1}{3}", "\\frac{14}{6}"], ["\\frac{3}{7}", "2.3"]),
        ("\\frac{1}{3}", ["\\frac13", "\\frac{2}{6}", "0.333333"], ["0.3", "\\frac{1}{4}"]),
    ],
    "decimal": [
        ("2.5", ["2.5", "2.50", "\\frac{5}{2}", "5/2"], ["2.05", "25"]),
        ("0.125", ["0.125", "\\frac{1}{8}", ".125"], ["0.12", "0.13"]),
    ],
    "radical": [
        ("2\\sqrt{2}", ["2\\sqrt{2}", "\\sqrt{8}", "2 \\sqrt 2", "\\sqrt{2}\\cdot 2"], ["\\sqrt{2}", "4", "2\\sqrt{3}"]),
        ("\\frac{\\sqrt{3}}{2}", ["\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt 3}{2}", "\\frac{3}{2\\sqrt{3}}"], ["\\frac{\\sqrt{2}}{2}", "\\sqrt{3}"]),
        ("3+\\sqrt{5}", ["3+\\sqrt{5}", "\\sqrt{5}+3"], ["3-\\sqrt{5}", "3\\sqrt{5}"]),
    ],
    "pi": [
        ("12\\pi", ["12\\pi", "12 \\pi", "\\pi \\cdot 12"], ["12", "6\\pi", "24\\pi"]),
        ("\\frac{\\pi}{4}", ["\\frac{\\pi}{4}", "\\frac{1}{4}\\pi", "0.25\\pi"], ["\\frac{\\pi}{2}", "\\pi"]),
    ],
    "interval": [
        ("(2, 5]", ["(2,5]", "\\left(2, 5\\right]", "(2, 5 ]"], ["[2,5)", "(2,5)", "[2,5]", "(2,6]"]),
        ("[-1, \\infty)", ["[-1,\\infty)", "\\left[-1, \\infty\\right)"], ["(-1,\\infty)", "[1,\\infty)"]),
        ("(-\\infty, 0) \\cup (3, \\infty)", ["(-\\infty,0)\\cup(3,\\infty)", "(3,\\infty)\\cup(-\\infty,0)"], ["(-\\infty,0]\\cup(3,\\infty)", "(0,3)"]),
    ],
    "set": [
        ("\\{1, 2, 3\\}", ["\\{1,2,3\\}", "\\{3,2,1\\}", "\\{2, 1, 3\\}"], ["\\{1,2\\}", "\\{1,2,4\\}"]),
        ("\\{-2, 5\\}", ["\\{-2,5\\}", "\\{5,-2\\}"], ["\\{2,5\\}", "\\{-2\\}"]),
    ],
    "tuple": [
        ("(1, -2)", ["(1,-2)", "\\left(1, -2\\right)"], ["(-2,1)", "(1,2)"]),
        ("(3, 4, 5)", ["(3,4,5)"], ["(3,5,4)", "(3,4)"]),
    ],
    "matrix": [
        (
            "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
            ["\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}"],
            ["\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}"],
        ),
        (
            "\\begin{pmatrix} -1 \\\\ 2 \\end{pmatrix}",
            ["\\begin{pmatrix}-1\\\\2\\end{pmatrix}", "\\begin{pmatrix} -1 \\\\ 2.0 \\end{pmatrix}"],
            ["\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\-1\\end{pmatrix}"],
        ),
    ],
    "percentage": [
        ("25\\%", ["25\\%", "25 \\%", "25"], ["2.5\\%", "75\\%"]),
        ("12.5\\%", ["12.5\\%", "12.5"], ["125\\%", "12\\%"]),
    ],
    "units": [
        ("5", ["5 \\text{ cm}", "5\\text{cm}", "5 \\mbox{ meters}", "5 \\text{ dollars}"], ["6 \\text{ cm}", "50"]),
        ("18", ["18 \\text{ inches}", "18 \\text{ square units}"], ["81 \\text{ inches}"]),
        ("90^\\circ", ["90^\\circ", "90^{\\circ}", "90"], ["45^\\circ", "180"]),
    ],
    "thousands": [
        ("1000000", ["1,000,000", "1000000", "1{,}000{,}000", "10^6"], ["100,000", "1,000,001"]),
        ("12345", ["12,345", "12345", "12{,}345"], ["12,354", "1234.5"]),
        ("\\$2,\\!500", ["2500", "\\$2,500", "2,500"], ["250", "\\$25"]),
    ],
    "decimal comma": [  # a bare gold with a decimal comma is one number (math-verify's own regression case)
        ("1,22", ["1.22", "1.220", "\\frac{61}{50}"], ["1.23", "122", "12.2"]),
        ("-0,5", ["-0.5", "-\\frac{1}{2}"], ["0.5", "-5"]),
    ],
    "expression": [
        ("x^2+2x+1", ["(x+1)^2", "x^2 + 2x + 1", "1+2x+x^2"], ["(x-1)^2", "x^2+1"]),
        ("2x-3", ["2x-3", "-3+2x"], ["3-2x", "2x+3"]),
        ("\\frac{x+1}{x-1}", ["\\frac{x+1}{x-1}", "\\frac{-x-1}{1-x}"], ["\\frac{x-1}{x+1}"]),
    ],
    "equation": [
        ("y = 2x + 1", ["y=2x+1", "y = 1 + 2x"], ["y=2x-1", "y = x + 1"]),
        ("3", ["x = 3", "x=3"], ["x = 4"]),
    ],
    "complex": [
        ("3 + 4i", ["3+4i", "4i+3"], ["3-4i", "4+3i"]),
    ],
    "scientific": [
        ("6.02 \\times 10^{23}", ["6.02\\times10^{23}", "6.02 \\cdot 10^{23}"], ["6.02\\times 10^{22}"]),
    ],
}

# Ways a response commits to its final answer; {a} is the answer's LaTeX.
ENDINGS = [
    "Therefore, the final answer is $\\boxed{{{a}}}$.",
    "So the answer is $\\boxed{{{a}}}$",
    "\\[\\boxed{{{a}}}\\]",
    "The answer is ${a}$.",
    "Final Answer: The final answer is ${a}$. I hope it is correct.",
    "Thus we get $${a}$$",
]

_STEPS = [
    "First, we rewrite the condition as $x_{{k}} + {n} = {m}$ and simplify.",
    "Substituting $t = {n}$ gives ${m} - {n} = {d}$, which we keep for later.",
    "We check the case $k = {n}$ separately: it yields ${m}$, not a solution.",
    "Note that $\\frac{{{m}}}{{{n}}}$ is not an integer, so we discard it.",
    "Multiplying both sides by ${n}$, we find that the sum is ${m}$.",
    "By the triangle inequality, the side must be less than ${m}$.",
    "Let me double check: ${n} \\cdot {d} = {p}$, which matches.",
]


def reasoning(rng: random.Random, sentences: int) -> str:
    """Plausible distractor-filled working, full of intermediate numbers and inline LaTeX."""
    out = []
    for _ in range(sentences):
        n, m = rng.randint(2, 99), rng.randint(100, 999)
        out.append(rng.choice(_STEPS).format(n=n, m=m, d=m - n, p=n * (m - n)))
    return " ".join(out)


def response_for(answer: str, rng: random.Random, sentences: int) -> str:
    ending = rng.choice(ENDINGS).format(a=answer)
    return f"{reasoning(rng, sentences)}\n\n{ending}" if sentences else ending


def collect(seed: int = 0) -> list[Case]:
    """All cases: every equivalent and non-equivalent form, once short and once inside long working."""
    rng = random.Random(seed)
    cases: list[Case] = []
    for family, items in FAMILIES.items():
        for gold, same, different in items:
            for forms, expected in ((same, True), (different, False)):
                for form in forms:
                    cases.append((response_for(form, rng, 0), gold, expected, family))
                    cases.append((response_for(form, rng, rng.randint(6, 25)), gold, expected, family))
    # Intermediate boxed values and a late correction: only the final commitment counts.
    for gold, same, different in FAMILIES["fraction"] + FAMILIES["integer"]:
        cases.append((f"We first get $\\boxed{{{different[0]}}}$, but that was wrong. {response_for(same[0], rng, 3)}", gold, True, "multiple_boxed"))
        cases.append((f"We first get $\\boxed{{{same[0]}}}$. Hmm, recheck. {response_for(different[0], rng, 3)}", gold, False, "multiple_boxed"))
    return cases


def random_problem(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """A fresh gold with equivalent and wrong forms, so a batch's prompts do not share answers."""
    kind = rng.randrange(8)
    a, b, c = rng.randint(2, 60), rng.randint(61, 200), rng.randint(1, 9)
    if kind == 0:
        return f"\\frac{{{a}}}{{{b}}}", [f"\\frac{{{a}}}{{{b}}}", f"{a}/{b}", f"\\frac{{{2 * a}}}{{{2 * b}}}"], [f"\\frac{{{b}}}{{{a}}}", f"\\frac{{{a + 1}}}{{{b}}}"]
    if kind == 1:
        n = a * 1000 + b
        return f"{n:,}", [str(n), f"{n:,}", f"{n:,}".replace(",", "{,}")], [str(n + 1), str(n * 10)]
    if kind == 2:
        return f"({a}, {b}]", [f"({a},{b}]", f"\\left({a}, {b}\\right]"], [f"[{a},{b})", f"({a},{b})"]
    if kind == 3:
        return f"\\{{{a}, {b}, {c}\\}}", [f"\\{{{a},{b},{c}\\}}", f"\\{{{c},{b},{a}\\}}"], [f"\\{{{a},{b}\\}}", f"\\{{{a},{b},{c + 10}\\}}"]
    if kind == 4:
        m = f"\\begin{{pmatrix}} {a} & {c} \\\\ {b} & 1 \\end{{pmatrix}}"
        return m, [m.replace(" ", ""), m.replace("pmatrix", "bmatrix")], [m.replace(f"{a}", f"{a + 1}", 1)]
    if kind == 5:
        return f"{a}\\%", [f"{a}\\%", f"{a}"], [f"{a + 1}\\%", f"{a / 100}"]
    if kind == 6:
        return f"x^2+{2 * c}x+{c * c}", [f"(x+{c})^2", f"x^2 + {2 * c}x + {c * c}"], [f"(x-{c})^2", f"x^2+{c * c}"]
    return f"{c}\\sqrt{{{a}}}", [f"{c}\\sqrt{{{a}}}", f"\\sqrt{{{a}}} \\cdot {c}"], [f"{c + 1}\\sqrt{{{a}}}", f"\\sqrt{{{a * c}}}"]


def rollout_batch(n_prompts: int = 125, group: int = 8, seed: int = 1, sample_seed: int | None = None) -> list[tuple[str, str]]:
    """A GRPO-like batch of ``(response, gold)``: ``group`` sampled responses per prompt, each with its
    own reasoning text, whose final answers cluster on a few forms (right, right-but-rewritten, wrong),
    as the samples of one policy for one prompt tend to. ``seed`` picks the prompts (each has its own
    gold), ``sample_seed`` the responses: the same ``seed`` with another ``sample_seed`` is the same
    prompts met again in a later epoch. Golds are ``$``-delimited so ``parse(gold)`` reads them
    exactly as the checker does."""
    problems_rng = random.Random(seed)
    rng = random.Random(seed if sample_seed is None else f"{seed}/{sample_seed}")
    batch = []
    for _ in range(n_prompts):
        gold, same, different = random_problem(problems_rng)
        answers = [same[0], same[0], rng.choice(same), rng.choice(different)]
        for _ in range(group):
            batch.append((response_for(rng.choice(answers), rng, rng.randint(10, 40)), f"${gold}$"))
    return batch
