"""Authoring source for the srs-code starter task set.

Every task below is original, hand-written material in the KodCode-V1 schema.
Run ``python3 tools/author_starter_set.py`` to regenerate ``tasks.jsonl``.

Each task is declared with :func:`add`; trials are ``(solution_code, test_result, note)``
tuples and are recorded in order as ``starter_0``, ``starter_1``, ...  The
``gpt_pass_*`` fields are derived from the recorded trials so they stay consistent.
"""

from __future__ import annotations

import json
from pathlib import Path

# kept out of the package: only its output, tasks.jsonl, ships in the wheel
OUT = Path(__file__).resolve().parents[1] / "plugins/data/starter_set/tasks.jsonl"
SOURCE = "srs-code starter set"
TASKS: list[dict] = []


def fn(name: str, params: str, doc: str) -> dict:
    """One ``test_info`` entry for a function task."""
    return {
        "function_name": name,
        "parameter_list": params,
        "function_declaration": f"def {name}{params}:",
        "docstring": doc,
    }


def add(difficulty, topic, question, solution, test_code, test_info, trials):
    """Register one task. ``trials`` is a list of (code, "Pass"|"Fail", note)."""
    assert difficulty in ("easy", "medium", "hard")
    assert 2 <= len(trials) <= 4
    qid = f"Starter_{len(TASKS) + 1:04d}_I"
    recorded = {}
    for i, (code, result, note) in enumerate(trials):
        assert result in ("Pass", "Fail")
        recorded[f"starter_{i}"] = {
            "solution_code": code.strip("\n") + "\n",
            "test_code": test_code.strip("\n") + "\n",
            "test_result": result,
            "note": note,
        }
    sequence = [1 if t["test_result"] == "Pass" else 0 for t in recorded.values()]
    chosen = next((k for k, t in recorded.items() if t["test_result"] == "Pass"), None)
    TASKS.append({
        "style": "instruct",
        "subset": "Starter",
        "question_id": qid,
        "question": question.strip("\n") + "\n",
        "solution": solution.strip("\n") + "\n",
        "test_code": test_code.strip("\n") + "\n",
        "test_info": test_info,
        "gpt_difficulty": difficulty,
        "gpt_pass_percentage": round(sum(sequence) / len(sequence), 4),
        "gpt_pass_sequence": sequence,
        "gpt_pass_trial_num": sum(sequence),
        "trials": recorded,
        "chosen_trial": chosen,
        "metadata": {"source": SOURCE, "topic": topic},
    })


# ---------------------------------------------------------------------------
# EASY
# ---------------------------------------------------------------------------

# 0001 reverse_words
add("easy", "strings",
r'''
Write a function `reverse_words(s)` that returns the words of the string `s` in reverse order,
joined by single spaces. A word is a maximal run of non-whitespace characters, so leading,
trailing and repeated whitespace (spaces, tabs, newlines) must not produce empty words.

Examples:
```python
>>> reverse_words("hello world")
'world hello'
>>> reverse_words("  the   sky  is blue ")
'blue is sky the'
>>> reverse_words("")
''
```
''',
r'''
def reverse_words(s):
    """Return the words of s in reverse order, separated by single spaces."""
    return " ".join(reversed(s.split()))
''',
r'''
from solution import reverse_words


def test_basic():
    assert reverse_words("hello world") == "world hello"


def test_single_word():
    assert reverse_words("python") == "python"


def test_extra_spaces():
    assert reverse_words("  the   sky  is blue ") == "blue is sky the"


def test_empty():
    assert reverse_words("") == ""


def test_tabs_and_newlines():
    assert reverse_words("a\tb\nc") == "c b a"
''',
[fn("reverse_words", "(s)", "Return the words of s in reverse order, separated by single spaces.")],
[
(r'''
def reverse_words(s):
    words = s.split()
    words.reverse()
    return " ".join(words)
''', "Pass", "correct: split on any whitespace, reverse in place"),
(r'''
def reverse_words(s):
    return " ".join(s.split(" ")[::-1])
''', "Fail", "splits on single spaces only: repeated spaces yield empty words and tabs/newlines are not separators"),
])

# 0002 is_palindrome
add("easy", "strings",
r'''
Write a function `is_palindrome(s)` that returns `True` if `s` reads the same forwards and
backwards after removing every non-alphanumeric character and ignoring letter case, and `False`
otherwise. The empty string is a palindrome.

Examples:
```python
>>> is_palindrome("A man, a plan, a canal: Panama")
True
>>> is_palindrome("race a car")
False
```
''',
r'''
def is_palindrome(s):
    """Return True if s is a palindrome ignoring case and non-alphanumeric characters."""
    cleaned = [c.lower() for c in s if c.isalnum()]
    return cleaned == cleaned[::-1]
''',
r'''
from solution import is_palindrome


def test_classic_sentence():
    assert is_palindrome("A man, a plan, a canal: Panama") is True


def test_not_palindrome():
    assert is_palindrome("race a car") is False


def test_empty_string():
    assert is_palindrome("") is True


def test_quotes_and_case():
    assert is_palindrome("No 'x' in Nixon") is True


def test_digit_and_letter():
    assert is_palindrome("0P") is False
''',
[fn("is_palindrome", "(s)", "Return True if s is a palindrome ignoring case and non-alphanumeric characters.")],
[
(r'''
def is_palindrome(s):
    i, j = 0, len(s) - 1
    while i < j:
        if not s[i].isalnum():
            i += 1
        elif not s[j].isalnum():
            j -= 1
        elif s[i].lower() != s[j].lower():
            return False
        else:
            i += 1
            j -= 1
    return True
''', "Pass", "correct two-pointer implementation"),
(r'''
def is_palindrome(s):
    cleaned = [c for c in s if c.isalnum()]
    return cleaned == cleaned[::-1]
''', "Fail", "forgets to ignore case: 'A man, a plan...' compares 'A' with 'a'"),
(r'''
def is_palindrome(s):
    cleaned = s.lower().replace(" ", "")
    return cleaned == cleaned[::-1]
''', "Fail", "only removes spaces, punctuation such as ',' and ':' is kept"),
])

# 0003 count_vowels  (all candidates pass)
add("easy", "strings",
r'''
Write a function `count_vowels(s)` that returns how many vowels the string `s` contains.
The vowels are `a`, `e`, `i`, `o`, `u` in either case; `y` is not a vowel.

Examples:
```python
>>> count_vowels("hello")
2
>>> count_vowels("AEIOU")
5
>>> count_vowels("rhythm")
0
```
''',
r'''
VOWELS = set("aeiouAEIOU")


def count_vowels(s):
    """Return the number of vowels (a, e, i, o, u, any case) in s."""
    return sum(1 for ch in s if ch in VOWELS)
''',
r'''
from solution import count_vowels


def test_lowercase():
    assert count_vowels("hello") == 2


def test_uppercase():
    assert count_vowels("AEIOU") == 5


def test_no_vowels():
    assert count_vowels("rhythm") == 0


def test_empty():
    assert count_vowels("") == 0


def test_sentence():
    assert count_vowels("Programming in Python") == 5
''',
[fn("count_vowels", "(s)", "Return the number of vowels (a, e, i, o, u, any case) in s.")],
[
(r'''
def count_vowels(s):
    return sum(1 for c in s.lower() if c in "aeiou")
''', "Pass", "correct: lowercase then membership test"),
(r'''
import re


def count_vowels(s):
    return len(re.findall(r"[aeiou]", s, flags=re.IGNORECASE))
''', "Pass", "correct: case-insensitive regex"),
])

# 0004 fizzbuzz  (test code relies on the runner's `from solution import *`)
add("easy", "math",
r'''
Write a function `fizzbuzz(n)` that returns a list of strings for the numbers `1` to `n`
inclusive: `"Fizz"` for multiples of 3, `"Buzz"` for multiples of 5, `"FizzBuzz"` for multiples
of both, and the number itself (as a string) otherwise. `fizzbuzz(0)` returns `[]`.

Example:
```python
>>> fizzbuzz(5)
['1', '2', 'Fizz', '4', 'Buzz']
```
''',
r'''
def fizzbuzz(n):
    """Return the FizzBuzz sequence from 1 to n as a list of strings."""
    out = []
    for i in range(1, n + 1):
        if i % 15 == 0:
            out.append("FizzBuzz")
        elif i % 3 == 0:
            out.append("Fizz")
        elif i % 5 == 0:
            out.append("Buzz")
        else:
            out.append(str(i))
    return out
''',
r'''
def test_first_fifteen():
    result = fizzbuzz(15)
    assert len(result) == 15
    assert result[:5] == ["1", "2", "Fizz", "4", "Buzz"]
    assert result[14] == "FizzBuzz"


def test_zero():
    assert fizzbuzz(0) == []


def test_one():
    assert fizzbuzz(1) == ["1"]


def test_all_strings():
    assert all(isinstance(x, str) for x in fizzbuzz(30))
''',
[fn("fizzbuzz", "(n)", "Return the FizzBuzz sequence from 1 to n as a list of strings.")],
[
(r'''
def fizzbuzz(n):
    return [("Fizz" * (i % 3 == 0) + "Buzz" * (i % 5 == 0)) or str(i) for i in range(1, n + 1)]
''', "Pass", "correct: string multiplication trick"),
(r'''
def fizzbuzz(n):
    out = []
    for i in range(n):
        if i % 15 == 0:
            out.append("FizzBuzz")
        elif i % 3 == 0:
            out.append("Fizz")
        elif i % 5 == 0:
            out.append("Buzz")
        else:
            out.append(str(i))
    return out
''', "Fail", "off-by-one: iterates 0..n-1, so the list starts with 'FizzBuzz' for 0"),
(r'''
def fizzbuzz(n):
    out = []
    for i in range(1, n + 1):
        if i % 15 == 0:
            out.append("FizzBuzz")
        elif i % 3 == 0:
            out.append("Fizz")
        elif i % 5 == 0:
            out.append("Buzz")
        else:
            out.append(i)
    return out
''', "Fail", "appends plain numbers as int instead of str"),
])

# 0005 second_largest
add("easy", "lists",
r'''
Write a function `second_largest(nums)` that returns the second largest **distinct** value in
the list `nums`. If the list has fewer than two distinct values, raise `ValueError`.

Examples:
```python
>>> second_largest([3, 1, 4, 1, 5])
4
>>> second_largest([5, 5, 4])
4
>>> second_largest([7, 7])
Traceback (most recent call last):
    ...
ValueError: need at least two distinct values
```
''',
r'''
def second_largest(nums):
    """Return the second largest distinct value; raise ValueError if there is none."""
    distinct = set(nums)
    if len(distinct) < 2:
        raise ValueError("need at least two distinct values")
    distinct.remove(max(distinct))
    return max(distinct)
''',
r'''
import pytest
from solution import second_largest


def test_basic():
    assert second_largest([3, 1, 4, 1, 5]) == 4


def test_duplicate_maximum():
    assert second_largest([5, 5, 4]) == 4


def test_negative_numbers():
    assert second_largest([-2, -1]) == -2


def test_all_equal_raises():
    with pytest.raises(ValueError):
        second_largest([7, 7])


def test_empty_raises():
    with pytest.raises(ValueError):
        second_largest([])
''',
[fn("second_largest", "(nums)", "Return the second largest distinct value; raise ValueError if there is none.")],
[
(r'''
def second_largest(nums):
    values = sorted(set(nums))
    if len(values) < 2:
        raise ValueError("need at least two distinct values")
    return values[-2]
''', "Pass", "correct: sort the distinct values"),
(r'''
def second_largest(nums):
    if len(nums) < 2:
        raise ValueError("need at least two values")
    return sorted(nums)[-2]
''', "Fail", "ignores duplicates: [5, 5, 4] returns 5 and [7, 7] returns 7 instead of raising"),
(r'''
def second_largest(nums):
    values = sorted(set(nums))
    if len(values) < 2:
        return None
    return values[-2]
''', "Fail", "returns None instead of raising ValueError"),
])

# 0006 temperature conversions (two functions)
add("easy", "math",
r'''
Write two functions:

* `celsius_to_fahrenheit(c)` converts a temperature in degrees Celsius to Fahrenheit
  using `F = C * 9 / 5 + 32`.
* `fahrenheit_to_celsius(f)` performs the inverse conversion.

Both take and return numbers (floats are fine). Converting one way and back should give the
original value (up to floating point error).

Examples:
```python
>>> celsius_to_fahrenheit(100)
212.0
>>> fahrenheit_to_celsius(-40)
-40.0
```
''',
r'''
def celsius_to_fahrenheit(c):
    """Convert degrees Celsius to degrees Fahrenheit."""
    return c * 9 / 5 + 32


def fahrenheit_to_celsius(f):
    """Convert degrees Fahrenheit to degrees Celsius."""
    return (f - 32) * 5 / 9
''',
r'''
import pytest
from solution import celsius_to_fahrenheit, fahrenheit_to_celsius


def test_freezing_and_boiling():
    assert celsius_to_fahrenheit(0) == pytest.approx(32)
    assert celsius_to_fahrenheit(100) == pytest.approx(212)


def test_minus_forty_is_fixed_point():
    assert celsius_to_fahrenheit(-40) == pytest.approx(-40)
    assert fahrenheit_to_celsius(-40) == pytest.approx(-40)


def test_fahrenheit_to_celsius():
    assert fahrenheit_to_celsius(212) == pytest.approx(100)
    assert fahrenheit_to_celsius(98.6) == pytest.approx(37)


def test_round_trip():
    for c in (-273.15, -12.5, 0, 21.3, 1000):
        assert fahrenheit_to_celsius(celsius_to_fahrenheit(c)) == pytest.approx(c)
''',
[
    fn("celsius_to_fahrenheit", "(c)", "Convert degrees Celsius to degrees Fahrenheit."),
    fn("fahrenheit_to_celsius", "(f)", "Convert degrees Fahrenheit to degrees Celsius."),
],
[
(r'''
def celsius_to_fahrenheit(c):
    return c * 1.8 + 32


def fahrenheit_to_celsius(f):
    return (f - 32) / 1.8
''', "Pass", "correct: uses the 1.8 factor"),
(r'''
def celsius_to_fahrenheit(c):
    return c * 9 / 5 + 32


def fahrenheit_to_celsius(f):
    return f - 32 * 5 / 9
''', "Fail", "operator precedence: computes f - (32 * 5 / 9) instead of (f - 32) * 5 / 9"),
])

# 0007 chunk_list
add("easy", "lists",
r'''
Write a function `chunk_list(lst, size)` that splits the list `lst` into consecutive chunks of
length `size` and returns them as a list of lists. The last chunk may be shorter. If `size` is
not a positive integer, raise `ValueError`.

Examples:
```python
>>> chunk_list([1, 2, 3, 4, 5], 2)
[[1, 2], [3, 4], [5]]
>>> chunk_list([], 3)
[]
```
''',
r'''
def chunk_list(lst, size):
    """Split lst into chunks of length size (the last one may be shorter)."""
    if size <= 0:
        raise ValueError("size must be positive")
    return [lst[i:i + size] for i in range(0, len(lst), size)]
''',
r'''
import pytest
from solution import chunk_list


def test_uneven_split():
    assert chunk_list([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


def test_even_split():
    assert chunk_list([1, 2, 3, 4], 2) == [[1, 2], [3, 4]]


def test_empty_list():
    assert chunk_list([], 3) == []


def test_size_larger_than_list():
    assert chunk_list([1, 2], 10) == [[1, 2]]


def test_invalid_sizes():
    with pytest.raises(ValueError):
        chunk_list([1, 2, 3], 0)
    with pytest.raises(ValueError):
        chunk_list([1, 2, 3], -1)
''',
[fn("chunk_list", "(lst, size)", "Split lst into chunks of length size (the last one may be shorter).")],
[
(r'''
def chunk_list(lst, size):
    if size < 1:
        raise ValueError("size must be positive")
    chunks, current = [], []
    for item in lst:
        current.append(item)
        if len(current) == size:
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)
    return chunks
''', "Pass", "correct: accumulate items into the current chunk"),
(r'''
def chunk_list(lst, size):
    if size == 0:
        raise ValueError("size must be positive")
    return [lst[i:i + size] for i in range(0, len(lst), size)]
''', "Fail", "only rejects size 0: a negative size silently returns []"),
])

# 0008 digit_sum
add("easy", "math",
r'''
Write a function `digit_sum(n)` that returns the sum of the decimal digits of the integer `n`.
For negative numbers use the digits of the absolute value.

Examples:
```python
>>> digit_sum(123)
6
>>> digit_sum(-456)
15
>>> digit_sum(0)
0
```
''',
r'''
def digit_sum(n):
    """Return the sum of the decimal digits of abs(n)."""
    return sum(int(d) for d in str(abs(n)))
''',
r'''
from solution import digit_sum


def test_positive():
    assert digit_sum(123) == 6


def test_zero():
    assert digit_sum(0) == 0


def test_negative():
    assert digit_sum(-456) == 15


def test_power_of_ten():
    assert digit_sum(1000000) == 1


def test_nines():
    assert digit_sum(99999) == 45
''',
[fn("digit_sum", "(n)", "Return the sum of the decimal digits of abs(n).")],
[
(r'''
def digit_sum(n):
    n = abs(n)
    total = 0
    while n:
        n, d = divmod(n, 10)
        total += d
    return total
''', "Pass", "correct: repeated divmod by 10"),
(r'''
def digit_sum(n):
    return sum(int(d) for d in str(n))
''', "Fail", "negative input: int('-') raises ValueError"),
(r'''
def digit_sum(n):
    total = 0
    while n > 0:
        total += n % 10
        n //= 10
    return total
''', "Fail", "negative input: loop never runs, returns 0"),
])

# 0009 acronym
add("easy", "strings",
r'''
Write a function `acronym(phrase)` that builds an acronym from `phrase`: take the first
character of every word and upper-case it. Words are separated by whitespace **and** hyphens;
empty pieces (from repeated separators) are ignored.

Examples:
```python
>>> acronym("Portable Network Graphics")
'PNG'
>>> acronym("complementary metal-oxide semiconductor")
'CMOS'
>>> acronym("")
''
```
''',
r'''
import re


def acronym(phrase):
    """Return the upper-case acronym of phrase (words split on whitespace and hyphens)."""
    return "".join(word[0].upper() for word in re.split(r"[\s\-]+", phrase) if word)
''',
r'''
from solution import acronym


def test_simple():
    assert acronym("Portable Network Graphics") == "PNG"


def test_hyphenated():
    assert acronym("complementary metal-oxide semiconductor") == "CMOS"


def test_lowercase_and_extra_spaces():
    assert acronym("  as soon   as possible ") == "ASAP"


def test_empty():
    assert acronym("") == ""


def test_double_hyphen():
    assert acronym("up--to date") == "UTD"
''',
[fn("acronym", "(phrase)", "Return the upper-case acronym of phrase (words split on whitespace and hyphens).")],
[
(r'''
def acronym(phrase):
    words = phrase.replace("-", " ").split()
    return "".join(w[0] for w in words).upper()
''', "Pass", "correct: turn hyphens into spaces, then split"),
(r'''
def acronym(phrase):
    return "".join(w[0].upper() for w in phrase.split())
''', "Fail", "splits on whitespace only, so 'metal-oxide' contributes one letter"),
])

# 0010 running_sum
add("easy", "lists",
r'''
Write a function `running_sum(nums)` that returns a **new** list whose `i`-th element is the sum
of `nums[0]` through `nums[i]`. The input list must not be modified.

Examples:
```python
>>> running_sum([1, 2, 3, 4])
[1, 3, 6, 10]
>>> running_sum([])
[]
```
''',
r'''
def running_sum(nums):
    """Return the prefix sums of nums as a new list."""
    out, total = [], 0
    for x in nums:
        total += x
        out.append(total)
    return out
''',
r'''
from solution import running_sum


def test_basic():
    assert running_sum([1, 2, 3, 4]) == [1, 3, 6, 10]


def test_empty():
    assert running_sum([]) == []


def test_single():
    assert running_sum([5]) == [5]


def test_negative_values():
    assert running_sum([-1, 1, -1]) == [-1, 0, -1]


def test_input_not_modified():
    data = [1, 2, 3]
    result = running_sum(data)
    assert data == [1, 2, 3]
    assert result is not data
''',
[fn("running_sum", "(nums)", "Return the prefix sums of nums as a new list.")],
[
(r'''
from itertools import accumulate


def running_sum(nums):
    return list(accumulate(nums))
''', "Pass", "correct: itertools.accumulate"),
(r'''
def running_sum(nums):
    for i in range(1, len(nums)):
        nums[i] += nums[i - 1]
    return nums
''', "Fail", "mutates the input list in place and returns it"),
])

# 0011 most_common_char
add("easy", "strings",
r'''
Write a function `most_common_char(s)` that returns the character that occurs most often in
`s`. If several characters share the highest count, return the one whose **first occurrence**
comes earliest in `s`. Return `None` for the empty string. All characters, including spaces,
count.

Examples:
```python
>>> most_common_char("hello")
'l'
>>> most_common_char("bbaa")
'b'
>>> most_common_char("") is None
True
```
''',
r'''
def most_common_char(s):
    """Return the most frequent character of s (earliest first occurrence wins ties)."""
    counts = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    best = None
    for ch, count in counts.items():  # dicts keep first-occurrence order
        if best is None or count > counts[best]:
            best = ch
    return best
''',
r'''
from solution import most_common_char


def test_clear_winner():
    assert most_common_char("hello") == "l"


def test_tie_goes_to_first_occurrence():
    assert most_common_char("bbaa") == "b"


def test_all_tied():
    assert most_common_char("cabcab") == "c"


def test_empty():
    assert most_common_char("") is None


def test_spaces_count():
    assert most_common_char("a  b") == " "
''',
[fn("most_common_char", "(s)", "Return the most frequent character of s (earliest first occurrence wins ties).")],
[
(r'''
from collections import Counter


def most_common_char(s):
    if not s:
        return None
    return Counter(s).most_common(1)[0][0]
''', "Pass", "correct: Counter keeps insertion order and most_common(1) returns the first maximum"),
(r'''
from collections import Counter


def most_common_char(s):
    if not s:
        return None
    counts = Counter(s)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
''', "Fail", "wrong tie-break: alphabetical instead of first occurrence ('bbaa' -> 'a')"),
])

# 0012 remove_duplicates  (all candidates pass)
add("easy", "lists",
r'''
Write a function `remove_duplicates(items)` that returns a new list containing the elements of
`items` with duplicates removed, keeping the **first** occurrence of each element and the
original order. The elements are hashable. Do not modify the input.

Example:
```python
>>> remove_duplicates([1, 2, 1, 3, 2])
[1, 2, 3]
```
''',
r'''
def remove_duplicates(items):
    """Return items without duplicates, keeping first occurrences in order."""
    seen = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
''',
r'''
from solution import remove_duplicates


def test_numbers():
    assert remove_duplicates([1, 2, 1, 3, 2]) == [1, 2, 3]


def test_empty():
    assert remove_duplicates([]) == []


def test_strings_keep_first_order():
    assert remove_duplicates(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_input_unchanged():
    data = [3, 3, 1]
    remove_duplicates(data)
    assert data == [3, 3, 1]
''',
[fn("remove_duplicates", "(items)", "Return items without duplicates, keeping first occurrences in order.")],
[
(r'''
def remove_duplicates(items):
    return list(dict.fromkeys(items))
''', "Pass", "correct: dict.fromkeys preserves insertion order"),
(r'''
def remove_duplicates(items):
    out = []
    for x in items:
        if x not in out:
            out.append(x)
    return out
''', "Pass", "correct (quadratic membership test, fine for small inputs)"),
])

# 0013 clamp  (test code relies on the runner's `from solution import *`)
add("easy", "math",
r'''
Write a function `clamp(value, low, high)` that limits `value` to the closed range
`[low, high]`: return `low` if `value < low`, `high` if `value > high`, otherwise `value`.
If `low > high`, raise `ValueError`. `low == high` is allowed.

Examples:
```python
>>> clamp(15, 0, 10)
10
>>> clamp(-3, 0, 10)
0
>>> clamp(7, 7, 7)
7
```
''',
r'''
def clamp(value, low, high):
    """Limit value to the closed interval [low, high]."""
    if low > high:
        raise ValueError("low must not exceed high")
    if value < low:
        return low
    if value > high:
        return high
    return value
''',
r'''
import pytest


def test_inside_range():
    assert clamp(5, 0, 10) == 5


def test_below_and_above():
    assert clamp(-3, 0, 10) == 0
    assert clamp(15, 0, 10) == 10


def test_floats():
    assert clamp(2.5, 1.0, 2.0) == 2.0


def test_degenerate_range():
    assert clamp(7, 7, 7) == 7
    assert clamp(9, 7, 7) == 7


def test_invalid_range():
    with pytest.raises(ValueError):
        clamp(1, 5, 0)
''',
[fn("clamp", "(value, low, high)", "Limit value to the closed interval [low, high].")],
[
(r'''
def clamp(value, low, high):
    if low > high:
        raise ValueError("empty range")
    return max(low, min(value, high))
''', "Pass", "correct: min/max after validating the range"),
(r'''
def clamp(value, low, high):
    return max(low, min(value, high))
''', "Fail", "never validates the range, so clamp(1, 5, 0) returns 5 instead of raising"),
(r'''
def clamp(value, low, high):
    if low >= high:
        raise ValueError("empty range")
    return max(low, min(value, high))
''', "Fail", "rejects low == high, which the spec allows"),
])

# 0014 is_leap_year  (parametrize)
add("easy", "math",
r'''
Write a function `is_leap_year(year)` that returns `True` if `year` is a leap year in the
Gregorian calendar and `False` otherwise. A year is a leap year if it is divisible by 4,
except years divisible by 100, which are leap years only if they are also divisible by 400.
The function must return a `bool`.

Examples:
```python
>>> is_leap_year(2024)
True
>>> is_leap_year(1900)
False
>>> is_leap_year(2000)
True
```
''',
r'''
def is_leap_year(year):
    """Return True if year is a Gregorian leap year."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
''',
r'''
import pytest
from solution import is_leap_year


@pytest.mark.parametrize(
    "year, expected",
    [(2024, True), (2023, False), (1900, False), (2000, True), (2100, False), (2400, True), (4, True)],
)
def test_known_years(year, expected):
    assert is_leap_year(year) is expected


def test_returns_bool():
    assert isinstance(is_leap_year(1996), bool)
    assert isinstance(is_leap_year(1997), bool)


def test_consecutive_years():
    assert [is_leap_year(y) for y in range(2019, 2025)] == [False, True, False, False, False, True]
''',
[fn("is_leap_year", "(year)", "Return True if year is a Gregorian leap year.")],
[
(r'''
import calendar


def is_leap_year(year):
    return calendar.isleap(year)
''', "Pass", "correct: delegates to calendar.isleap"),
(r'''
def is_leap_year(year):
    return year % 4 == 0 and year % 100 != 0
''', "Fail", "forgets the divisible-by-400 exception: 2000 and 2400 are reported as common years"),
(r'''
def is_leap_year(year):
    if year % 400 == 0:
        return True
    if year % 100 == 0:
        return False
    return year % 4 == 0
''', "Pass", "correct: checks the rules from most to least specific"),
])

# 0015 hamming_distance
add("easy", "strings",
r'''
Write a function `hamming_distance(a, b)` that returns the number of positions at which the
strings `a` and `b` differ. The comparison is case-sensitive. If the strings have different
lengths, raise `ValueError`.

Examples:
```python
>>> hamming_distance("karolin", "kathrin")
3
>>> hamming_distance("abc", "ab")
Traceback (most recent call last):
    ...
ValueError: strings must have equal length
```
''',
r'''
def hamming_distance(a, b):
    """Return the number of differing positions of two equal-length strings."""
    if len(a) != len(b):
        raise ValueError("strings must have equal length")
    return sum(1 for x, y in zip(a, b) if x != y)
''',
r'''
import pytest
from solution import hamming_distance


def test_classic():
    assert hamming_distance("karolin", "kathrin") == 3


def test_identical():
    assert hamming_distance("abc", "abc") == 0


def test_empty():
    assert hamming_distance("", "") == 0


def test_case_sensitive():
    assert hamming_distance("a", "A") == 1


def test_unequal_lengths():
    with pytest.raises(ValueError):
        hamming_distance("abc", "ab")
''',
[fn("hamming_distance", "(a, b)", "Return the number of differing positions of two equal-length strings.")],
[
(r'''
def hamming_distance(a, b):
    return sum(x != y for x, y in zip(a, b, strict=True))
''', "Pass", "correct: zip(strict=True) raises ValueError on unequal lengths"),
(r'''
def hamming_distance(a, b):
    return sum(x != y for x, y in zip(a, b))
''', "Fail", "zip silently truncates, so unequal lengths do not raise"),
])


# ---------------------------------------------------------------------------
# MEDIUM
# ---------------------------------------------------------------------------

# 0016 rle_encode
add("medium", "strings",
r'''
Write a function `rle_encode(s)` that run-length encodes the string `s`. Return a list of
`(character, count)` tuples, one per maximal run of equal consecutive characters, in order.

Examples:
```python
>>> rle_encode("aaabcc")
[('a', 3), ('b', 1), ('c', 2)]
>>> rle_encode("abab")
[('a', 1), ('b', 1), ('a', 1), ('b', 1)]
>>> rle_encode("")
[]
```
''',
r'''
def rle_encode(s):
    """Return the run-length encoding of s as a list of (char, count) tuples."""
    runs = []
    for ch in s:
        if runs and runs[-1][0] == ch:
            runs[-1][1] += 1
        else:
            runs.append([ch, 1])
    return [(ch, n) for ch, n in runs]
''',
r'''
from solution import rle_encode


def test_mixed_runs():
    assert rle_encode("aaabcc") == [("a", 3), ("b", 1), ("c", 2)]


def test_empty():
    assert rle_encode("") == []


def test_single_char():
    assert rle_encode("a") == [("a", 1)]


def test_alternating():
    assert rle_encode("abab") == [("a", 1), ("b", 1), ("a", 1), ("b", 1)]


def test_one_long_run():
    assert rle_encode("zzzz") == [("z", 4)]
''',
[fn("rle_encode", "(s)", "Return the run-length encoding of s as a list of (char, count) tuples.")],
[
(r'''
from itertools import groupby


def rle_encode(s):
    return [(ch, len(list(group))) for ch, group in groupby(s)]
''', "Pass", "correct: itertools.groupby"),
(r'''
def rle_encode(s):
    result = []
    count = 1
    for i in range(1, len(s)):
        if s[i] == s[i - 1]:
            count += 1
        else:
            result.append((s[i - 1], count))
            count = 1
    return result
''', "Fail", "off-by-one: the final run is never appended"),
(r'''
def rle_encode(s):
    return [(ch, sum(1 for _ in group)) for ch, group in groupby(s)]
''', "Fail", "NameError: groupby is used without importing it from itertools"),
])

# 0017 merge_sorted
add("medium", "lists",
r'''
Write a function `merge_sorted(a, b)` that merges two lists sorted in non-decreasing order into
one new sorted list containing all elements of both (duplicates kept). Neither input list may be
modified.

Examples:
```python
>>> merge_sorted([1, 3, 5], [2, 4, 6])
[1, 2, 3, 4, 5, 6]
>>> merge_sorted([], [1, 2])
[1, 2]
```
''',
r'''
def merge_sorted(a, b):
    """Merge two sorted lists into a new sorted list."""
    i = j = 0
    out = []
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    out.extend(a[i:])
    out.extend(b[j:])
    return out
''',
r'''
from solution import merge_sorted


def test_interleaved():
    assert merge_sorted([1, 3, 5], [2, 4, 6]) == [1, 2, 3, 4, 5, 6]


def test_first_empty():
    assert merge_sorted([], [1, 2]) == [1, 2]


def test_second_empty():
    assert merge_sorted([1, 2], []) == [1, 2]


def test_duplicates_and_negatives():
    assert merge_sorted([-3, 1, 2, 2], [-5, 2, 3]) == [-5, -3, 1, 2, 2, 2, 3]


def test_inputs_unchanged():
    a, b = [1, 4], [2, 3]
    merge_sorted(a, b)
    assert a == [1, 4] and b == [2, 3]
''',
[fn("merge_sorted", "(a, b)", "Merge two sorted lists into a new sorted list.")],
[
(r'''
import heapq


def merge_sorted(a, b):
    return list(heapq.merge(a, b))
''', "Pass", "correct: heapq.merge"),
(r'''
def merge_sorted(a, b):
    i = j = 0
    out = []
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    out.extend(a[i:])
    return out
''', "Fail", "forgets the leftover tail of b: merge_sorted([], [1, 2]) returns []"),
(r'''
def merge_sorted(a, b):
    a.extend(b)
    a.sort()
    return a
''', "Fail", "correct values but mutates the first input list"),
])

# 0018 group_anagrams
add("medium", "strings",
r'''
Write a function `group_anagrams(words)` that groups the strings in `words` that are anagrams of
each other (same characters with the same multiplicities; case-sensitive). Return a list of
groups; groups appear in the order in which their first member appears in `words`, and words
inside a group keep their original order (duplicates included).

Example:
```python
>>> group_anagrams(["eat", "tea", "tan", "ate", "nat", "bat"])
[['eat', 'tea', 'ate'], ['tan', 'nat'], ['bat']]
```
''',
r'''
def group_anagrams(words):
    """Group anagrams, preserving first-appearance order of groups and of words."""
    groups = {}
    for word in words:
        groups.setdefault("".join(sorted(word)), []).append(word)
    return list(groups.values())
''',
r'''
from solution import group_anagrams


def test_example():
    words = ["eat", "tea", "tan", "ate", "nat", "bat"]
    assert group_anagrams(words) == [["eat", "tea", "ate"], ["tan", "nat"], ["bat"]]


def test_empty():
    assert group_anagrams([]) == []


def test_duplicates_kept():
    assert group_anagrams(["ab", "ba", "ab"]) == [["ab", "ba", "ab"]]


def test_multiplicity_matters():
    assert group_anagrams(["aab", "abb"]) == [["aab"], ["abb"]]


def test_case_sensitive():
    assert group_anagrams(["ab", "Ba"]) == [["ab"], ["Ba"]]
''',
[fn("group_anagrams", "(words)", "Group anagrams, preserving first-appearance order of groups and of words.")],
[
(r'''
from collections import defaultdict


def group_anagrams(words):
    groups = defaultdict(list)
    for w in words:
        groups[tuple(sorted(w))].append(w)
    return list(groups.values())
''', "Pass", "correct: defaultdict keyed by the sorted characters"),
(r'''
def group_anagrams(words):
    groups = {}
    for w in words:
        groups.setdefault("".join(sorted(w)), []).append(w)
    return sorted(groups.values())
''', "Fail", "sorts the groups alphabetically instead of keeping first-appearance order"),
(r'''
def group_anagrams(words):
    groups = {}
    for w in words:
        groups.setdefault(frozenset(w), []).append(w)
    return list(groups.values())
''', "Fail", "frozenset key ignores letter multiplicity: 'aab' and 'abb' are grouped together"),
])

# 0019 is_balanced
add("medium", "parsing",
r'''
Write a function `is_balanced(s)` that returns `True` if the brackets `()`, `[]` and `{}` in
`s` are balanced and properly nested, and `False` otherwise. All other characters are ignored.

Examples:
```python
>>> is_balanced("([{}])")
True
>>> is_balanced("([)]")
False
>>> is_balanced("a(b)c")
True
```
''',
r'''
PAIRS = {")": "(", "]": "[", "}": "{"}


def is_balanced(s):
    """Return True if the brackets in s are balanced and properly nested."""
    stack = []
    for ch in s:
        if ch in "([{":
            stack.append(ch)
        elif ch in PAIRS:
            if not stack or stack.pop() != PAIRS[ch]:
                return False
    return not stack
''',
r'''
from solution import is_balanced


def test_flat_and_nested():
    assert is_balanced("()[]{}") is True
    assert is_balanced("([{}])") is True


def test_mismatched():
    assert is_balanced("(]") is False


def test_crossed():
    assert is_balanced("([)]") is False


def test_unclosed_and_wrong_order():
    assert is_balanced("(") is False
    assert is_balanced(")(") is False


def test_other_characters_and_empty():
    assert is_balanced("a(b)c") is True
    assert is_balanced("") is True
''',
[fn("is_balanced", "(s)", "Return True if the brackets in s are balanced and properly nested.")],
[
(r'''
def is_balanced(s):
    closing = {"(": ")", "[": "]", "{": "}"}
    expected = []
    for ch in s:
        if ch in closing:
            expected.append(closing[ch])
        elif ch in ")]}":
            if not expected or expected.pop() != ch:
                return False
    return len(expected) == 0
''', "Pass", "correct: stack of expected closing brackets"),
(r'''
def is_balanced(s):
    depth = {"(": 0, "[": 0, "{": 0}
    match = {")": "(", "]": "[", "}": "{"}
    for ch in s:
        if ch in depth:
            depth[ch] += 1
        elif ch in match:
            depth[match[ch]] -= 1
            if depth[match[ch]] < 0:
                return False
    return all(v == 0 for v in depth.values())
''', "Fail", "counts each bracket type separately, so crossed nesting '([)]' is accepted"),
(r'''
def is_balanced(s):
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in s:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return True
''', "Fail", "forgets to check that the stack is empty at the end: '(' is accepted"),
])

# 0020 roman_to_int  (all candidates pass)
add("medium", "parsing",
r'''
Write a function `roman_to_int(s)` that converts a valid Roman numeral between `I` (1) and
`MMMCMXCIX` (3999) into an integer. Remember the subtractive forms `IV`, `IX`, `XL`, `XC`,
`CD` and `CM`.

Examples:
```python
>>> roman_to_int("LVIII")
58
>>> roman_to_int("MCMXCIV")
1994
```
''',
r'''
VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def roman_to_int(s):
    """Convert a Roman numeral to an integer."""
    total = 0
    for i, ch in enumerate(s):
        value = VALUES[ch]
        if i + 1 < len(s) and VALUES[s[i + 1]] > value:
            total -= value
        else:
            total += value
    return total
''',
r'''
from solution import roman_to_int


def test_additive():
    assert roman_to_int("III") == 3
    assert roman_to_int("LVIII") == 58


def test_subtractive_small():
    assert roman_to_int("IV") == 4
    assert roman_to_int("IX") == 9


def test_mixed():
    assert roman_to_int("MCMXCIV") == 1994


def test_maximum():
    assert roman_to_int("MMMCMXCIX") == 3999


def test_forty_and_four_hundred():
    assert roman_to_int("XL") == 40
    assert roman_to_int("CDXLIV") == 444
''',
[fn("roman_to_int", "(s)", "Convert a Roman numeral to an integer.")],
[
(r'''
def roman_to_int(s):
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    total, prev = 0, 0
    for ch in reversed(s):
        v = values[ch]
        if v < prev:
            total -= v
        else:
            total += v
            prev = v
    return total
''', "Pass", "correct: scan right to left, subtract smaller values"),
(r'''
def roman_to_int(s):
    for old, new in (("CM", "DCCCC"), ("CD", "CCCC"), ("XC", "LXXXX"),
                     ("XL", "XXXX"), ("IX", "VIIII"), ("IV", "IIII")):
        s = s.replace(old, new)
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    return sum(values[ch] for ch in s)
''', "Pass", "correct: expand subtractive pairs, then add"),
])

# 0021 int_to_roman  (parametrize)
add("medium", "parsing",
r'''
Write a function `int_to_roman(n)` that converts an integer `1 <= n <= 3999` into its Roman
numeral using the standard subtractive forms (`IV`, `IX`, `XL`, `XC`, `CD`, `CM`). Raise
`ValueError` for any `n` outside that range.

Examples:
```python
>>> int_to_roman(1994)
'MCMXCIV'
>>> int_to_roman(4)
'IV'
```
''',
r'''
TABLE = [
    (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
    (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
]


def int_to_roman(n):
    """Convert an integer in 1..3999 to a Roman numeral."""
    if not 1 <= n <= 3999:
        raise ValueError("n must be between 1 and 3999")
    parts = []
    for value, symbol in TABLE:
        count, n = divmod(n, value)
        parts.append(symbol * count)
    return "".join(parts)
''',
r'''
import pytest
from solution import int_to_roman


@pytest.mark.parametrize(
    "n, expected",
    [(1, "I"), (4, "IV"), (9, "IX"), (14, "XIV"), (40, "XL"), (90, "XC"),
     (400, "CD"), (1994, "MCMXCIV"), (3999, "MMMCMXCIX")],
)
def test_conversion(n, expected):
    assert int_to_roman(n) == expected


@pytest.mark.parametrize("n", [0, -5, 4000])
def test_out_of_range(n):
    with pytest.raises(ValueError):
        int_to_roman(n)


def test_returns_str():
    assert isinstance(int_to_roman(2024), str)
''',
[fn("int_to_roman", "(n)", "Convert an integer in 1..3999 to a Roman numeral.")],
[
(r'''
def int_to_roman(n):
    if n < 1 or n > 3999:
        raise ValueError("out of range")
    thousands = ["", "M", "MM", "MMM"]
    hundreds = ["", "C", "CC", "CCC", "CD", "D", "DC", "DCC", "DCCC", "CM"]
    tens = ["", "X", "XX", "XXX", "XL", "L", "LX", "LXX", "LXXX", "XC"]
    ones = ["", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX"]
    return thousands[n // 1000] + hundreds[n // 100 % 10] + tens[n // 10 % 10] + ones[n % 10]
''', "Pass", "correct: per-digit lookup tables"),
(r'''
def int_to_roman(n):
    if not 1 <= n <= 3999:
        raise ValueError("out of range")
    out = ""
    for value, symbol in [(1000, "M"), (500, "D"), (100, "C"), (50, "L"), (10, "X"), (5, "V"), (1, "I")]:
        while n >= value:
            out += symbol
            n -= value
    return out
''', "Fail", "no subtractive forms: 4 becomes 'IIII' and 9 becomes 'VIIII'"),
(r'''
def int_to_roman(n):
    if n < 1 or n > 4000:
        raise ValueError("out of range")
    table = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
             (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]
    out = []
    for value, symbol in table:
        while n >= value:
            out.append(symbol)
            n -= value
    return "".join(out)
''', "Fail", "off-by-one upper bound: 4000 is accepted and returns 'MMMM'"),
])

# 0022 flatten
add("medium", "lists",
r'''
Write a function `flatten(nested)` that takes a list which may contain arbitrarily nested lists
**and tuples** and returns a flat list of all non-list, non-tuple elements in left-to-right
order. Strings and other objects are atoms and must not be split.

Examples:
```python
>>> flatten([1, [2, [3, [4]]]])
[1, 2, 3, 4]
>>> flatten([1, (2, 3), [4, (5,)]])
[1, 2, 3, 4, 5]
>>> flatten(["ab", ["cd"]])
['ab', 'cd']
```
''',
r'''
def flatten(nested):
    """Flatten arbitrarily nested lists and tuples into a flat list."""
    out = []
    for item in nested:
        if isinstance(item, (list, tuple)):
            out.extend(flatten(item))
        else:
            out.append(item)
    return out
''',
r'''
from solution import flatten


def test_deeply_nested_lists():
    assert flatten([1, [2, [3, [4]]]]) == [1, 2, 3, 4]


def test_empty_structures():
    assert flatten([]) == []
    assert flatten([[], [[]]]) == []


def test_tuples_are_flattened():
    assert flatten([1, (2, 3), [4, (5,)]]) == [1, 2, 3, 4, 5]


def test_strings_are_atoms():
    assert flatten(["ab", ["cd"]]) == ["ab", "cd"]


def test_other_atoms():
    assert flatten([None, [1.5, [{"k": 1}]]]) == [None, 1.5, {"k": 1}]
''',
[fn("flatten", "(nested)", "Flatten arbitrarily nested lists and tuples into a flat list.")],
[
(r'''
def flatten(nested):
    out = []
    stack = [iter(nested)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, (list, tuple)):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out
''', "Pass", "correct: iterative with a stack of iterators"),
(r'''
def flatten(nested):
    out = []
    for item in nested:
        if isinstance(item, list):
            out.extend(flatten(item))
        else:
            out.append(item)
    return out
''', "Fail", "only recurses into lists; tuples are kept as atoms"),
(r'''
def flatten(nested):
    def walk(x):
        for item in x:
            if isinstance(item, (list, tuple)):
                yield from walk(item)
            else:
                yield item
    return list(walk(nested))
''', "Pass", "correct: recursive generator"),
])

# 0023 rotate_matrix
add("medium", "matrices",
r'''
Write a function `rotate_matrix(matrix)` that returns a **new** matrix (list of lists) equal to
`matrix` rotated 90 degrees clockwise. The matrix may be rectangular (an `m x n` input gives an
`n x m` output). The input must not be modified; `rotate_matrix([])` returns `[]`.

Examples:
```python
>>> rotate_matrix([[1, 2], [3, 4]])
[[3, 1], [4, 2]]
>>> rotate_matrix([[1, 2, 3], [4, 5, 6]])
[[4, 1], [5, 2], [6, 3]]
```
''',
r'''
def rotate_matrix(matrix):
    """Return matrix rotated 90 degrees clockwise as a new list of lists."""
    return [list(row) for row in zip(*matrix[::-1])]
''',
r'''
from solution import rotate_matrix


def test_two_by_two():
    assert rotate_matrix([[1, 2], [3, 4]]) == [[3, 1], [4, 2]]


def test_three_by_three():
    m = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert rotate_matrix(m) == [[7, 4, 1], [8, 5, 2], [9, 6, 3]]


def test_rectangular():
    assert rotate_matrix([[1, 2, 3], [4, 5, 6]]) == [[4, 1], [5, 2], [6, 3]]


def test_empty():
    assert rotate_matrix([]) == []


def test_input_unchanged():
    m = [[1, 2], [3, 4]]
    rotate_matrix(m)
    assert m == [[1, 2], [3, 4]]
''',
[fn("rotate_matrix", "(matrix)", "Return matrix rotated 90 degrees clockwise as a new list of lists.")],
[
(r'''
def rotate_matrix(matrix):
    if not matrix:
        return []
    rows, cols = len(matrix), len(matrix[0])
    return [[matrix[rows - 1 - r][c] for r in range(rows)] for c in range(cols)]
''', "Pass", "correct: explicit index arithmetic"),
(r'''
def rotate_matrix(matrix):
    return list(zip(*matrix[::-1]))
''', "Fail", "returns a list of tuples instead of a list of lists"),
(r'''
def rotate_matrix(matrix):
    n = len(matrix)
    return [[matrix[n - 1 - j][i] for j in range(n)] for i in range(n)]
''', "Fail", "assumes a square matrix: a 2x3 input yields a 2x2 result"),
])

# 0024 top_k_frequent
add("medium", "hashing",
r'''
Write a function `top_k_frequent(nums, k)` that returns the `k` most frequent values in the list
`nums`, ordered by frequency (highest first); values with equal frequency are ordered by value
(smallest first). If there are fewer than `k` distinct values, return all of them. `k` is a
non-negative integer.

Examples:
```python
>>> top_k_frequent([1, 1, 1, 2, 2, 3], 2)
[1, 2]
>>> top_k_frequent([5, 5, 4, 4, 6], 2)
[4, 5]
```
''',
r'''
from collections import Counter


def top_k_frequent(nums, k):
    """Return the k most frequent values (ties broken by smaller value)."""
    counts = Counter(nums)
    return sorted(counts, key=lambda v: (-counts[v], v))[:k]
''',
r'''
from solution import top_k_frequent


def test_basic():
    assert top_k_frequent([1, 1, 1, 2, 2, 3], 2) == [1, 2]


def test_tie_broken_by_value():
    assert top_k_frequent([5, 5, 4, 4, 6], 2) == [4, 5]


def test_k_larger_than_distinct():
    assert top_k_frequent([7], 5) == [7]


def test_empty_and_zero():
    assert top_k_frequent([], 3) == []
    assert top_k_frequent([1, 2], 0) == []


def test_full_ordering():
    assert top_k_frequent([3, 1, 2, 3, 2, 1, 3], 3) == [3, 1, 2]
''',
[fn("top_k_frequent", "(nums, k)", "Return the k most frequent values (ties broken by smaller value).")],
[
(r'''
from collections import Counter


def top_k_frequent(nums, k):
    return [v for v, _ in Counter(nums).most_common(k)]
''', "Fail", "Counter.most_common breaks ties by first appearance, not by value"),
(r'''
def top_k_frequent(nums, k):
    counts = {}
    for x in nums:
        counts[x] = counts.get(x, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [v for v, _ in ranked[:k]]
''', "Pass", "correct: sort (value, count) pairs by (-count, value)"),
(r'''
import heapq
from collections import Counter


def top_k_frequent(nums, k):
    counts = Counter(nums)
    return heapq.nlargest(k, counts, key=counts.get)
''', "Fail", "heapq.nlargest keeps first-appearance order for ties instead of the smaller value"),
])

# 0025 binary_search  (one candidate loops forever)
add("medium", "searching",
r'''
Write a function `binary_search(nums, target)` that returns the index of the **first**
occurrence of `target` in the list `nums`, which is sorted in non-decreasing order, or `-1` if
`target` is not present. It must run in O(log n) time.

Examples:
```python
>>> binary_search([1, 2, 2, 2, 3], 2)
1
>>> binary_search([1, 3, 5], 4)
-1
```
''',
r'''
from bisect import bisect_left


def binary_search(nums, target):
    """Return the leftmost index of target in sorted nums, or -1."""
    i = bisect_left(nums, target)
    return i if i < len(nums) and nums[i] == target else -1
''',
r'''
from solution import binary_search


def test_found():
    assert binary_search([1, 2, 3, 4, 5], 3) == 2


def test_leftmost_of_duplicates():
    assert binary_search([1, 2, 2, 2, 3], 2) == 1
    assert binary_search([2, 2, 2], 2) == 0


def test_empty():
    assert binary_search([], 1) == -1


def test_missing_values():
    assert binary_search([1, 3, 5], 4) == -1
    assert binary_search([1, 3, 5], 0) == -1
    assert binary_search([1, 3, 5], 6) == -1


def test_ends():
    assert binary_search([1, 3, 5], 1) == 0
    assert binary_search([1, 3, 5], 5) == 2
''',
[fn("binary_search", "(nums, target)", "Return the leftmost index of target in sorted nums, or -1.")],
[
(r'''
def binary_search(nums, target):
    lo, hi = 0, len(nums)
    while lo < hi:
        mid = (lo + hi) // 2
        if nums[mid] < target:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < len(nums) and nums[lo] == target else -1
''', "Pass", "correct: half-open lower-bound search"),
(r'''
def binary_search(nums, target):
    lo, hi = 0, len(nums) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if nums[mid] == target:
            return mid
        if nums[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1
''', "Fail", "returns whichever matching index is hit first, not the leftmost one"),
(r'''
def binary_search(nums, target):
    lo, hi = 0, len(nums) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if nums[mid] < target:
            lo = mid
        else:
            hi = mid
    return lo if nums and nums[lo] == target else -1
''', "Fail", "timeout: lo = mid never advances once hi == lo + 1, so the loop spins forever"),
])

# 0026 caesar_cipher  (test code relies on the runner's `from solution import *`)
add("medium", "strings",
r'''
Write a function `caesar_cipher(text, shift)` that shifts every ASCII letter of `text` by
`shift` positions in the alphabet, wrapping around and preserving case (`'z'` shifted by 1 is
`'a'`, `'Z'` shifted by 1 is `'A'`). All other characters are left unchanged. `shift` may be
negative or larger than 26.

Examples:
```python
>>> caesar_cipher("Hello, World!", 5)
'Mjqqt, Btwqi!'
>>> caesar_cipher("abc", -1)
'zab'
```
''',
r'''
import string


def caesar_cipher(text, shift):
    """Shift ASCII letters of text by shift positions, preserving case."""
    out = []
    for ch in text:
        if ch in string.ascii_lowercase:
            out.append(chr((ord(ch) - 97 + shift) % 26 + 97))
        elif ch in string.ascii_uppercase:
            out.append(chr((ord(ch) - 65 + shift) % 26 + 65))
        else:
            out.append(ch)
    return "".join(out)
''',
r'''
def test_simple_shift():
    assert caesar_cipher("abc", 1) == "bcd"


def test_wraps_around():
    assert caesar_cipher("xyz", 3) == "abc"


def test_preserves_case_and_punctuation():
    assert caesar_cipher("Hello, World!", 5) == "Mjqqt, Btwqi!"


def test_negative_and_large_shifts():
    assert caesar_cipher("abc", -1) == "zab"
    assert caesar_cipher("abc", 27) == "bcd"


def test_round_trip():
    msg = "The Quick Brown Fox, 2024!"
    assert caesar_cipher(caesar_cipher(msg, 13), -13) == msg
''',
[fn("caesar_cipher", "(text, shift)", "Shift ASCII letters of text by shift positions, preserving case.")],
[
(r'''
import string


def caesar_cipher(text, shift):
    k = shift % 26
    lower, upper = string.ascii_lowercase, string.ascii_uppercase
    table = str.maketrans(lower + upper, lower[k:] + lower[:k] + upper[k:] + upper[:k])
    return text.translate(table)
''', "Pass", "correct: translation table built from rotated alphabets"),
(r'''
def caesar_cipher(text, shift):
    out = []
    for ch in text.lower():
        if "a" <= ch <= "z":
            out.append(chr((ord(ch) - 97 + shift) % 26 + 97))
        else:
            out.append(ch)
    return "".join(out)
''', "Fail", "lower-cases the whole text, so upper-case letters lose their case"),
(r'''
def caesar_cipher(text, shift):
    out = []
    for ch in text:
        if ch.isalpha():
            base = 65 if ch.isupper() else 97
            out.append(chr(base + (ord(ch) - base + shift) % 26))
        else:
            out.append(ch)
    return "".join(out)
''', "Pass", "correct for ASCII input (isalpha would also accept non-ASCII letters, untested)"),
])

# 0027 spiral_order
add("medium", "matrices",
r'''
Write a function `spiral_order(matrix)` that returns all elements of the `m x n` matrix (a list
of lists) in clockwise spiral order, starting at the top-left corner. Every element appears
exactly once. Empty inputs (`[]` or `[[]]`) give `[]`.

Example:
```python
>>> spiral_order([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
[1, 2, 3, 6, 9, 8, 7, 4, 5]
```
''',
r'''
def spiral_order(matrix):
    """Return the elements of matrix in clockwise spiral order."""
    result = []
    if not matrix or not matrix[0]:
        return result
    top, bottom, left, right = 0, len(matrix) - 1, 0, len(matrix[0]) - 1
    while top <= bottom and left <= right:
        for c in range(left, right + 1):
            result.append(matrix[top][c])
        top += 1
        for r in range(top, bottom + 1):
            result.append(matrix[r][right])
        right -= 1
        if top <= bottom:
            for c in range(right, left - 1, -1):
                result.append(matrix[bottom][c])
            bottom -= 1
        if left <= right:
            for r in range(bottom, top - 1, -1):
                result.append(matrix[r][left])
            left += 1
    return result
''',
r'''
from solution import spiral_order


def test_square():
    assert spiral_order([[1, 2, 3], [4, 5, 6], [7, 8, 9]]) == [1, 2, 3, 6, 9, 8, 7, 4, 5]


def test_wide():
    m = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    assert spiral_order(m) == [1, 2, 3, 4, 8, 12, 11, 10, 9, 5, 6, 7]


def test_single_row():
    assert spiral_order([[1, 2, 3]]) == [1, 2, 3]


def test_single_column():
    assert spiral_order([[1], [2], [3]]) == [1, 2, 3]


def test_empty():
    assert spiral_order([]) == []
    assert spiral_order([[]]) == []
''',
[fn("spiral_order", "(matrix)", "Return the elements of matrix in clockwise spiral order.")],
[
(r'''
def spiral_order(matrix):
    m = [list(row) for row in matrix]
    out = []
    while m:
        out.extend(m.pop(0))
        m = [list(row) for row in zip(*m)][::-1]
    return out
''', "Pass", "correct: peel the top row, rotate the rest counter-clockwise"),
(r'''
def spiral_order(matrix):
    result = []
    if not matrix or not matrix[0]:
        return result
    top, bottom, left, right = 0, len(matrix) - 1, 0, len(matrix[0]) - 1
    while top <= bottom and left <= right:
        for c in range(left, right + 1):
            result.append(matrix[top][c])
        top += 1
        for r in range(top, bottom + 1):
            result.append(matrix[r][right])
        right -= 1
        for c in range(right, left - 1, -1):
            result.append(matrix[bottom][c])
        bottom -= 1
        for r in range(bottom, top - 1, -1):
            result.append(matrix[r][left])
        left += 1
    return result
''', "Fail", "missing boundary re-checks: a single row or column is traversed twice"),
])

# 0028 word_frequencies
add("medium", "strings",
r'''
Write a function `word_frequencies(text)` that counts words in `text`, case-insensitively.
A word is a maximal run of ASCII letters and digits (everything else separates words).
Return a list of `(word, count)` tuples with the words in lower case, sorted by count
(highest first) and then alphabetically.

Examples:
```python
>>> word_frequencies("the cat and the hat")
[('the', 2), ('and', 1), ('cat', 1), ('hat', 1)]
>>> word_frequencies("Hello, hello! HELLO?")
[('hello', 3)]
```
''',
r'''
import re
from collections import Counter


def word_frequencies(text):
    """Return (word, count) pairs sorted by count descending, then word."""
    counts = Counter(re.findall(r"[a-z0-9]+", text.lower()))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
''',
r'''
from solution import word_frequencies


def test_basic():
    assert word_frequencies("the cat and the hat") == [("the", 2), ("and", 1), ("cat", 1), ("hat", 1)]


def test_case_and_punctuation():
    assert word_frequencies("Hello, hello! HELLO?") == [("hello", 3)]


def test_empty():
    assert word_frequencies("") == []


def test_ties_sorted_alphabetically():
    assert word_frequencies("b a b a c") == [("a", 2), ("b", 2), ("c", 1)]


def test_apostrophes_and_digits():
    assert word_frequencies("it's 2 o'clock") == [("2", 1), ("clock", 1), ("it", 1), ("o", 1), ("s", 1)]
''',
[fn("word_frequencies", "(text)", "Return (word, count) pairs sorted by count descending, then word.")],
[
(r'''
from collections import Counter


def word_frequencies(text):
    counts = Counter(text.lower().split())
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
''', "Fail", "splits on whitespace only, so punctuation stays attached ('hello,' vs 'hello!')"),
(r'''
import re
from collections import Counter


def word_frequencies(text):
    return Counter(re.findall(r"[a-z0-9]+", text.lower())).most_common()
''', "Fail", "most_common orders ties by first appearance instead of alphabetically"),
(r'''
import re


def word_frequencies(text):
    counts = {}
    for word in re.split(r"[^a-z0-9]+", text.lower()):
        if word:
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
''', "Pass", "correct: split on non-alphanumeric runs, skip empty pieces"),
])

# 0029 MinStack  (class task, test_info null)
add("medium", "data-structures",
r'''
Implement a class `MinStack`, a stack that can report its minimum in O(1) time:

* `push(x)` pushes `x` onto the stack.
* `pop()` removes and returns the top element.
* `top()` returns the top element without removing it.
* `get_min()` returns the smallest element currently on the stack.
* `len(stack)` returns the number of elements.

`pop`, `top` and `get_min` on an empty stack raise `IndexError`.

Example:
```python
>>> s = MinStack()
>>> s.push(2); s.push(1); s.push(3)
>>> s.get_min()
1
>>> s.pop(); s.pop()
3
1
>>> s.get_min()
2
```
''',
r'''
class MinStack:
    """Stack with O(1) push, pop, top and get_min."""

    def __init__(self):
        self._items = []
        self._mins = []

    def push(self, x):
        self._items.append(x)
        self._mins.append(x if not self._mins else min(x, self._mins[-1]))

    def pop(self):
        if not self._items:
            raise IndexError("pop from empty stack")
        self._mins.pop()
        return self._items.pop()

    def top(self):
        if not self._items:
            raise IndexError("top of empty stack")
        return self._items[-1]

    def get_min(self):
        if not self._mins:
            raise IndexError("min of empty stack")
        return self._mins[-1]

    def __len__(self):
        return len(self._items)
''',
r'''
import pytest
from solution import MinStack


def test_push_and_top():
    s = MinStack()
    s.push(3)
    s.push(5)
    assert s.top() == 5
    assert len(s) == 2


def test_min_tracks_pushes():
    s = MinStack()
    for x in (5, 3, 7):
        s.push(x)
    assert s.get_min() == 3


def test_min_after_pop():
    s = MinStack()
    for x in (2, 1, 3):
        s.push(x)
    assert s.pop() == 3
    assert s.get_min() == 1
    assert s.pop() == 1
    assert s.get_min() == 2


def test_duplicate_minimums():
    s = MinStack()
    s.push(1)
    s.push(1)
    s.pop()
    assert s.get_min() == 1
    assert len(s) == 1


def test_empty_raises_index_error():
    s = MinStack()
    with pytest.raises(IndexError):
        s.pop()
    with pytest.raises(IndexError):
        s.top()
    with pytest.raises(IndexError):
        s.get_min()
''',
None,
[
(r'''
class MinStack:
    def __init__(self):
        self._data = []  # (value, min so far)

    def push(self, x):
        current = x if not self._data else min(x, self._data[-1][1])
        self._data.append((x, current))

    def pop(self):
        return self._data.pop()[0]

    def top(self):
        return self._data[-1][0]

    def get_min(self):
        return self._data[-1][1]

    def __len__(self):
        return len(self._data)
''', "Pass", "correct: store (value, running minimum) pairs; list errors are IndexError already"),
(r'''
class MinStack:
    def __init__(self):
        self._items = []
        self._min = None

    def push(self, x):
        self._items.append(x)
        if self._min is None or x < self._min:
            self._min = x

    def pop(self):
        return self._items.pop()

    def top(self):
        return self._items[-1]

    def get_min(self):
        if not self._items:
            raise IndexError("empty")
        return self._min

    def __len__(self):
        return len(self._items)
''', "Fail", "keeps a single minimum that is never restored after popping it"),
(r'''
class MinStack:
    def __init__(self):
        self._items = []
        self._mins = []

    def push(self, x):
        self._items.append(x)
        self._mins.append(x if not self._mins else min(x, self._mins[-1]))

    def pop(self):
        if not self._items:
            raise ValueError("pop from empty stack")
        self._mins.pop()
        return self._items.pop()

    def top(self):
        if not self._items:
            raise ValueError("empty stack")
        return self._items[-1]

    def get_min(self):
        if not self._mins:
            raise ValueError("empty stack")
        return self._mins[-1]

    def __len__(self):
        return len(self._items)
''', "Fail", "raises ValueError instead of IndexError on an empty stack"),
])

# 0030 parse_duration  (parametrize; every candidate fails)
add("medium", "parsing",
r'''
Write a function `parse_duration(s)` that converts a compact duration string into a number of
seconds. The string consists of one or more `<digits><unit>` parts where the unit is `h`
(hours), `m` (minutes) or `s` (seconds). Units must appear in the order `h`, `m`, `s`, each at
most once, with no spaces. Zero values such as `"0s"` are valid.

Raise `ValueError` for anything else: the empty string, a number without a unit, an unknown
unit, units out of order or repeated, a unit without a number, or surrounding whitespace.

Examples:
```python
>>> parse_duration("1h30m")
5400
>>> parse_duration("2h5s")
7205
>>> parse_duration("1m1h")
Traceback (most recent call last):
    ...
ValueError: invalid duration: '1m1h'
```
''',
r'''
import re

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(s):
    """Convert a string such as '1h30m' into seconds; raise ValueError if malformed."""
    match = _DURATION.fullmatch(s)
    if match is None or not any(match.groups()):
        raise ValueError(f"invalid duration: {s!r}")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds
''',
r'''
import pytest
from solution import parse_duration


def test_hours_and_minutes():
    assert parse_duration("1h30m") == 5400


def test_single_units():
    assert parse_duration("45s") == 45
    assert parse_duration("3h") == 10800


def test_skipped_unit():
    assert parse_duration("2h5s") == 7205
    assert parse_duration("1h1m1s") == 3661


def test_zero_is_valid():
    assert parse_duration("0s") == 0


@pytest.mark.parametrize("bad", ["", "10", "5x", "1m1h", "1h1h", "h", " 1h", "1h "])
def test_invalid(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)
''',
[fn("parse_duration", "(s)", "Convert a string such as '1h30m' into seconds; raise ValueError if malformed.")],
[
(r'''
import re


def parse_duration(s):
    parts = re.findall(r"(\d+)([hms])", s)
    if not parts:
        raise ValueError(f"invalid duration: {s!r}")
    factor = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * factor[u] for n, u in parts)
''', "Fail", "findall skips junk and accepts out-of-order or repeated units ('1m1h', ' 1h')"),
(r'''
def parse_duration(s):
    units = {"h": 3600, "m": 60, "s": 1}
    if not s:
        raise ValueError("empty duration")
    total, num, last = 0, "", -1
    for ch in s:
        if ch in "0123456789":
            num += ch
            continue
        if not num:
            raise ValueError("unit without a number")
        rank = "hms".find(ch)
        if rank != -1 and rank <= last:
            raise ValueError("units out of order or repeated")
        total += int(num) * units[ch]
        last, num = rank, ""
    if num:
        raise ValueError("number without a unit")
    return total
''', "Fail", "an unknown unit such as '5x' raises KeyError instead of ValueError"),
(r'''
import re


def parse_duration(s):
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", s)
    if not match:
        raise ValueError(f"invalid duration: {s!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total == 0:
        raise ValueError("empty duration")
    return total
''', "Fail", "detects the empty string via a zero total, so the valid input '0s' is rejected"),
])

# 0031 longest_common_prefix  (all candidates pass)
add("medium", "strings",
r'''
Write a function `longest_common_prefix(strs)` that returns the longest string that is a prefix
of every string in the list `strs`. Return `""` if there is no common prefix or the list is
empty.

Examples:
```python
>>> longest_common_prefix(["flower", "flow", "flight"])
'fl'
>>> longest_common_prefix(["dog", "racecar", "car"])
''
```
''',
r'''
def longest_common_prefix(strs):
    """Return the longest common prefix of all strings in strs."""
    if not strs:
        return ""
    shortest = min(strs, key=len)
    for i, ch in enumerate(shortest):
        if any(s[i] != ch for s in strs):
            return shortest[:i]
    return shortest
''',
r'''
from solution import longest_common_prefix


def test_common_prefix():
    assert longest_common_prefix(["flower", "flow", "flight"]) == "fl"


def test_no_common_prefix():
    assert longest_common_prefix(["dog", "racecar", "car"]) == ""


def test_empty_list():
    assert longest_common_prefix([]) == ""


def test_single_and_identical():
    assert longest_common_prefix(["alone"]) == "alone"
    assert longest_common_prefix(["same", "same"]) == "same"


def test_contains_empty_string():
    assert longest_common_prefix(["", "abc"]) == ""
''',
[fn("longest_common_prefix", "(strs)", "Return the longest common prefix of all strings in strs.")],
[
(r'''
import os


def longest_common_prefix(strs):
    return os.path.commonprefix(strs)
''', "Pass", "correct: os.path.commonprefix works character by character"),
(r'''
def longest_common_prefix(strs):
    prefix = []
    for chars in zip(*strs):
        if len(set(chars)) != 1:
            break
        prefix.append(chars[0])
    return "".join(prefix)
''', "Pass", "correct: zip the strings column by column"),
])

# 0032 move_zeros
add("medium", "lists",
r'''
Write a function `move_zeros(nums)` that moves all zeros in the list `nums` to its end **in
place**, keeping the relative order of the non-zero elements. The function returns `None`.

Example:
```python
>>> data = [0, 1, 0, 3, 12]
>>> move_zeros(data)
>>> data
[1, 3, 12, 0, 0]
```
''',
r'''
def move_zeros(nums):
    """Move zeros to the end of nums in place, keeping non-zero order."""
    write = 0
    for x in nums:
        if x != 0:
            nums[write] = x
            write += 1
    for i in range(write, len(nums)):
        nums[i] = 0
''',
r'''
from solution import move_zeros


def test_example():
    data = [0, 1, 0, 3, 12]
    assert move_zeros(data) is None
    assert data == [1, 3, 12, 0, 0]


def test_empty():
    data = []
    move_zeros(data)
    assert data == []


def test_all_zeros():
    data = [0, 0, 0]
    move_zeros(data)
    assert data == [0, 0, 0]


def test_no_zeros():
    data = [4, 2, 9]
    move_zeros(data)
    assert data == [4, 2, 9]


def test_negative_values_keep_order():
    data = [-1, 0, -2, 0, 5]
    move_zeros(data)
    assert data == [-1, -2, 5, 0, 0]
''',
[fn("move_zeros", "(nums)", "Move zeros to the end of nums in place, keeping non-zero order.")],
[
(r'''
def move_zeros(nums):
    nums.sort(key=lambda x: x == 0)
''', "Pass", "correct: stable sort on the key 'is zero'"),
(r'''
def move_zeros(nums):
    nums = [x for x in nums if x != 0] + [0] * nums.count(0)
''', "Fail", "rebinds the local name instead of modifying the caller's list"),
(r'''
def move_zeros(nums):
    write = 0
    for read in range(len(nums)):
        if nums[read] != 0:
            nums[write], nums[read] = nums[read], nums[write]
            write += 1
''', "Pass", "correct: swap non-zeros forward"),
])

# 0033 max_subarray_sum  (test code relies on the runner's `from solution import *`)
add("medium", "dp",
r'''
Write a function `max_subarray_sum(nums)` that returns the largest possible sum of a
**non-empty** contiguous sub-list of `nums`. If `nums` is empty, raise `ValueError`.

Examples:
```python
>>> max_subarray_sum([-2, 1, -3, 4, -1, 2, 1, -5, 4])
6
>>> max_subarray_sum([-3, -1, -2])
-1
```
''',
r'''
def max_subarray_sum(nums):
    """Return the maximum sum of a non-empty contiguous sub-list (Kadane)."""
    if not nums:
        raise ValueError("nums must not be empty")
    best = current = nums[0]
    for x in nums[1:]:
        current = max(x, current + x)
        best = max(best, current)
    return best
''',
r'''
import pytest


def test_mixed():
    assert max_subarray_sum([-2, 1, -3, 4, -1, 2, 1, -5, 4]) == 6


def test_all_negative():
    assert max_subarray_sum([-3, -1, -2]) == -1


def test_single():
    assert max_subarray_sum([5]) == 5


def test_all_positive():
    assert max_subarray_sum([1, 2, 3]) == 6


def test_empty_raises():
    with pytest.raises(ValueError):
        max_subarray_sum([])
''',
[fn("max_subarray_sum", "(nums)", "Return the maximum sum of a non-empty contiguous sub-list (Kadane).")],
[
(r'''
def max_subarray_sum(nums):
    if not nums:
        raise ValueError("empty")
    best = float("-inf")
    current = 0
    for x in nums:
        current += x
        best = max(best, current)
        if current < 0:
            current = 0
    return best
''', "Pass", "correct: reset the running sum after recording the best"),
(r'''
def max_subarray_sum(nums):
    if not nums:
        raise ValueError("empty")
    best = current = 0
    for x in nums:
        current = max(0, current + x)
        best = max(best, current)
    return best
''', "Fail", "allows the empty sub-list: all-negative input returns 0 instead of -1"),
])


# ---------------------------------------------------------------------------
# HARD
# ---------------------------------------------------------------------------

# 0034 LRUCache  (class task, test_info [])
add("hard", "data-structures",
r'''
Implement a class `LRUCache` holding at most `capacity` key/value pairs:

* `LRUCache(capacity)` creates an empty cache; raise `ValueError` if `capacity < 1`.
* `get(key)` returns the stored value, or `-1` if the key is absent. A successful `get` marks
  the key as most recently used.
* `put(key, value)` inserts or updates the key and marks it as most recently used. If the cache
  then holds more than `capacity` keys, the **least recently used** key is evicted.
* `len(cache)` returns the number of stored keys.

`get` and `put` must run in O(1) average time.

Example:
```python
>>> c = LRUCache(2)
>>> c.put(1, 1); c.put(2, 2)
>>> c.get(1)
1
>>> c.put(3, 3)      # evicts key 2
>>> c.get(2)
-1
```
''',
r'''
from collections import OrderedDict


class LRUCache:
    """Fixed-capacity cache evicting the least recently used key."""

    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._data = OrderedDict()

    def get(self, key):
        if key not in self._data:
            return -1
        self._data.move_to_end(key)
        return self._data[key]

    def put(self, key, value):
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def __len__(self):
        return len(self._data)
''',
r'''
import pytest
from solution import LRUCache


def test_basic_get_put():
    c = LRUCache(2)
    c.put(1, "a")
    c.put(2, "b")
    assert c.get(1) == "a"
    assert c.get(3) == -1


def test_evicts_least_recently_used():
    c = LRUCache(2)
    c.put(1, 1)
    c.put(2, 2)
    c.put(3, 3)
    assert c.get(1) == -1
    assert c.get(2) == 2
    assert c.get(3) == 3


def test_get_refreshes_recency():
    c = LRUCache(2)
    c.put(1, 1)
    c.put(2, 2)
    c.get(1)
    c.put(3, 3)
    assert c.get(2) == -1
    assert c.get(1) == 1


def test_put_update_refreshes_recency():
    c = LRUCache(2)
    c.put(1, 1)
    c.put(2, 2)
    c.put(1, 10)
    c.put(3, 3)
    assert c.get(1) == 10
    assert c.get(2) == -1
    assert len(c) == 2


def test_capacity_one():
    c = LRUCache(1)
    c.put("x", 1)
    c.put("y", 2)
    assert c.get("x") == -1
    assert c.get("y") == 2


def test_invalid_capacity():
    with pytest.raises(ValueError):
        LRUCache(0)
''',
[],
[
(r'''
class LRUCache:
    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.store = {}

    def get(self, key):
        if key not in self.store:
            return -1
        value = self.store.pop(key)
        self.store[key] = value
        return value

    def put(self, key, value):
        self.store.pop(key, None)
        self.store[key] = value
        if len(self.store) > self.capacity:
            del self.store[next(iter(self.store))]

    def __len__(self):
        return len(self.store)
''', "Pass", "correct: plain dict, re-insert on access so insertion order is recency order"),
(r'''
from collections import OrderedDict


class LRUCache:
    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.data = OrderedDict()

    def get(self, key):
        return self.data.get(key, -1)

    def put(self, key, value):
        self.data[key] = value
        self.data.move_to_end(key)
        if len(self.data) > self.capacity:
            self.data.popitem(last=False)

    def __len__(self):
        return len(self.data)
''', "Fail", "get does not refresh recency, so a recently read key is evicted"),
(r'''
class LRUCache:
    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.store = {}

    def get(self, key):
        if key not in self.store:
            return -1
        value = self.store.pop(key)
        self.store[key] = value
        return value

    def put(self, key, value):
        self.store[key] = value
        if len(self.store) > self.capacity:
            del self.store[next(iter(self.store))]

    def __len__(self):
        return len(self.store)
''', "Fail", "updating an existing key keeps its old position, so it is evicted too early"),
])

# 0035 merge_intervals  (every candidate fails)
add("hard", "intervals",
r'''
Write a function `merge_intervals(intervals)` that merges overlapping closed intervals. Each
interval is a two-element list `[start, end]` with `start <= end`; the input may be in any
order. Intervals that merely touch (`[1, 4]` and `[4, 5]`) also merge. Return a new list of
`[start, end]` lists sorted by start. The input list and its inner lists must not be modified.

Examples:
```python
>>> merge_intervals([[1, 3], [2, 6], [8, 10], [15, 18]])
[[1, 6], [8, 10], [15, 18]]
>>> merge_intervals([[1, 4], [4, 5]])
[[1, 5]]
```
''',
r'''
def merge_intervals(intervals):
    """Merge overlapping or touching closed intervals into a new sorted list."""
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged
''',
r'''
import copy

from solution import merge_intervals


def test_overlapping():
    assert merge_intervals([[1, 3], [2, 6], [8, 10], [15, 18]]) == [[1, 6], [8, 10], [15, 18]]


def test_touching_intervals_merge():
    assert merge_intervals([[1, 4], [4, 5]]) == [[1, 5]]


def test_unsorted_input():
    assert merge_intervals([[5, 6], [1, 2]]) == [[1, 2], [5, 6]]


def test_contained_intervals():
    assert merge_intervals([[1, 10], [2, 3], [4, 5]]) == [[1, 10]]


def test_empty():
    assert merge_intervals([]) == []


def test_input_not_modified():
    data = [[3, 4], [1, 2], [2, 3]]
    snapshot = copy.deepcopy(data)
    merge_intervals(data)
    assert data == snapshot
''',
[fn("merge_intervals", "(intervals)", "Merge overlapping or touching closed intervals into a new sorted list.")],
[
(r'''
def merge_intervals(intervals):
    merged = []
    for start, end in sorted(intervals):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged
''', "Fail", "strict '<' comparison: touching intervals [1, 4] and [4, 5] stay separate"),
(r'''
def merge_intervals(intervals):
    intervals.sort()
    merged = []
    for iv in intervals:
        if merged and iv[0] <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], iv[1])
        else:
            merged.append(iv)
    return merged
''', "Fail", "sorts the caller's list in place and extends the caller's inner lists"),
(r'''
def merge_intervals(intervals):
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return merged
''', "Fail", "overwrites the end instead of taking the max, so a contained interval shrinks the merge"),
])

# 0036 edit_distance
add("hard", "dp",
r'''
Write a function `edit_distance(a, b)` that returns the Levenshtein distance between strings
`a` and `b`: the minimum number of single-character insertions, deletions and substitutions
needed to turn `a` into `b`.

Examples:
```python
>>> edit_distance("kitten", "sitting")
3
>>> edit_distance("", "abc")
3
```
''',
r'''
def edit_distance(a, b):
    """Return the Levenshtein distance between a and b."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cur[j] = min(
                prev[j] + 1,               # delete ca
                cur[j - 1] + 1,            # insert cb
                prev[j - 1] + (ca != cb),  # substitute
            )
        prev = cur
    return prev[-1]
''',
r'''
from solution import edit_distance


def test_classic():
    assert edit_distance("kitten", "sitting") == 3


def test_empty_strings():
    assert edit_distance("", "") == 0
    assert edit_distance("", "abc") == 3
    assert edit_distance("abc", "") == 3


def test_small_cases():
    assert edit_distance("flaw", "lawn") == 2


def test_longer_words():
    assert edit_distance("intention", "execution") == 5


def test_symmetric():
    assert edit_distance("sunday", "saturday") == edit_distance("saturday", "sunday") == 3
''',
[fn("edit_distance", "(a, b)", "Return the Levenshtein distance between a and b.")],
[
(r'''
from functools import lru_cache


def edit_distance(a, b):
    @lru_cache(maxsize=None)
    def d(i, j):
        if i == 0:
            return j
        if j == 0:
            return i
        if a[i - 1] == b[j - 1]:
            return d(i - 1, j - 1)
        return 1 + min(d(i - 1, j), d(i, j - 1), d(i - 1, j - 1))
    return d(len(a), len(b))
''', "Pass", "correct: memoised recursion"),
(r'''
def edit_distance(a, b):
    m, n = len(a), len(b)
    dp = [[0] * (n + 1) for _ in range(m + 1)]
    for j in range(n + 1):
        dp[0][j] = j
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            dp[i][j] = min(dp[i - 1][j] + 1, dp[i][j - 1] + 1, dp[i - 1][j - 1] + cost)
    return dp[m][n]
''', "Fail", "base column dp[i][0] = i is never initialised, so deleting a prefix is free"),
(r'''
def edit_distance(a, b):
    m, n = len(a), len(b)
    lcs = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(m):
        for j in range(n):
            if a[i] == b[j]:
                lcs[i + 1][j + 1] = lcs[i][j] + 1
            else:
                lcs[i + 1][j + 1] = max(lcs[i][j + 1], lcs[i + 1][j])
    return m + n - 2 * lcs[m][n]
''', "Fail", "computes insert/delete distance via LCS: a substitution costs 2 instead of 1"),
])

# 0037 shortest_path  (every candidate fails)
add("hard", "graphs",
r'''
Write a function `shortest_path(graph, start, end)` that finds the cheapest path in a directed
graph with non-negative edge weights. `graph` maps each node to a list of `(neighbor, weight)`
pairs; a node that only appears as a neighbor has no outgoing edges and may be missing from
`graph`. Return a tuple `(cost, path)` where `path` is the list of nodes from `start` to `end`
inclusive, or `None` if `end` is unreachable. `shortest_path(graph, x, x)` is `(0, [x])`.

Example:
```python
>>> g = {"A": [("B", 1), ("C", 4)], "B": [("C", 2), ("D", 5)], "C": [("D", 1)]}
>>> shortest_path(g, "A", "D")
(4, ['A', 'B', 'C', 'D'])
```
''',
r'''
import heapq


def shortest_path(graph, start, end):
    """Dijkstra: return (cost, path) of the cheapest start->end path, or None."""
    dist = {start: 0}
    prev = {}
    heap = [(0, start)]
    done = set()
    while heap:
        d, node = heapq.heappop(heap)
        if node in done:
            continue
        done.add(node)
        if node == end:
            path = [node]
            while path[-1] != start:
                path.append(prev[path[-1]])
            return d, path[::-1]
        for neighbor, weight in graph.get(node, ()):
            nd = d + weight
            if neighbor not in dist or nd < dist[neighbor]:
                dist[neighbor] = nd
                prev[neighbor] = node
                heapq.heappush(heap, (nd, neighbor))
    return None
''',
r'''
from solution import shortest_path

GRAPH = {
    "A": [("B", 1), ("C", 4)],
    "B": [("C", 2), ("D", 5)],
    "C": [("D", 1)],
    "D": [],
}


def test_cheapest_not_fewest_edges():
    assert shortest_path(GRAPH, "A", "D") == (4, ["A", "B", "C", "D"])


def test_same_node():
    assert shortest_path(GRAPH, "A", "A") == (0, ["A"])


def test_unreachable_is_none():
    assert shortest_path(GRAPH, "D", "A") is None
    assert shortest_path({}, "q", "r") is None


def test_node_only_as_neighbor():
    g = {"x": [("y", 3)]}
    assert shortest_path(g, "x", "y") == (3, ["x", "y"])
    assert shortest_path(g, "y", "x") is None


def test_zero_weight_edges():
    g = {"s": [("a", 0), ("b", 2)], "a": [("b", 1)]}
    assert shortest_path(g, "s", "b") == (1, ["s", "a", "b"])
''',
[fn("shortest_path", "(graph, start, end)", "Dijkstra: return (cost, path) of the cheapest start->end path, or None.")],
[
(r'''
from collections import deque


def shortest_path(graph, start, end):
    prev = {start: None}
    cost = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == end:
            path = []
            while node is not None:
                path.append(node)
                node = prev[node]
            return cost[end], path[::-1]
        for nb, w in graph.get(node, ()):
            if nb not in prev:
                prev[nb] = node
                cost[nb] = cost[node] + w
                queue.append(nb)
    return None
''', "Fail", "BFS finds the path with the fewest edges, not the cheapest (A-B-D costs 6)"),
(r'''
import heapq


def shortest_path(graph, start, end):
    dist = {start: 0}
    prev = {}
    heap = [(0, start)]
    seen = set()
    while heap:
        d, node = heapq.heappop(heap)
        if node in seen:
            continue
        seen.add(node)
        if node == end:
            path = [node]
            while path[-1] != start:
                path.append(prev[path[-1]])
            return d, path
        for nb, w in graph.get(node, ()):
            if nb not in dist or d + w < dist[nb]:
                dist[nb] = d + w
                prev[nb] = node
                heapq.heappush(heap, (d + w, nb))
    return None
''', "Fail", "forgets to reverse the reconstructed path, returning it end-to-start"),
(r'''
import heapq


def shortest_path(graph, start, end):
    dist = {start: 0}
    prev = {}
    heap = [(0, start)]
    seen = set()
    while heap:
        d, node = heapq.heappop(heap)
        if node in seen:
            continue
        seen.add(node)
        if node == end:
            path = [node]
            while path[-1] != start:
                path.append(prev[path[-1]])
            return d, path[::-1]
        for nb, w in graph[node]:
            if nb not in dist or d + w < dist[nb]:
                dist[nb] = d + w
                prev[nb] = node
                heapq.heappush(heap, (d + w, nb))
    return None
''', "Fail", "indexes graph[node] directly: KeyError for nodes that only appear as neighbors"),
])

# 0038 topological_order  (every candidate fails)
add("hard", "graphs",
r'''
Write a function `topological_order(n, edges)` for a directed graph with nodes `0 .. n-1`.
Each edge `(u, v)` means `u` must come before `v`. Return the **lexicographically smallest**
ordering of all nodes that respects every edge (at each step pick the smallest available node).
If the graph has a cycle (including a self-loop), raise `ValueError`.

Examples:
```python
>>> topological_order(4, [(0, 1), (0, 2), (1, 3), (2, 3)])
[0, 1, 2, 3]
>>> topological_order(5, [(3, 1), (4, 0), (2, 0)])
[2, 3, 1, 4, 0]
```
''',
r'''
import heapq


def topological_order(n, edges):
    """Return the lexicographically smallest topological order; ValueError on a cycle."""
    indegree = [0] * n
    adjacency = [[] for _ in range(n)]
    for u, v in edges:
        adjacency[u].append(v)
        indegree[v] += 1
    heap = [node for node in range(n) if indegree[node] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        node = heapq.heappop(heap)
        order.append(node)
        for nxt in adjacency[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(heap, nxt)
    if len(order) != n:
        raise ValueError("graph contains a cycle")
    return order
''',
r'''
import pytest
from solution import topological_order


def test_diamond():
    assert topological_order(4, [(0, 1), (0, 2), (1, 3), (2, 3)]) == [0, 1, 2, 3]


def test_no_edges():
    assert topological_order(3, []) == [0, 1, 2]
    assert topological_order(0, []) == []


def test_smallest_available_first():
    assert topological_order(3, [(2, 0)]) == [1, 2, 0]
    assert topological_order(5, [(3, 1), (4, 0), (2, 0)]) == [2, 3, 1, 4, 0]


def test_cycle_raises():
    with pytest.raises(ValueError):
        topological_order(3, [(0, 1), (1, 2), (2, 0)])


def test_self_loop_raises():
    with pytest.raises(ValueError):
        topological_order(2, [(1, 1)])
''',
[fn("topological_order", "(n, edges)", "Return the lexicographically smallest topological order; ValueError on a cycle.")],
[
(r'''
from collections import deque


def topological_order(n, edges):
    indegree = [0] * n
    adjacency = [[] for _ in range(n)]
    for u, v in edges:
        adjacency[u].append(v)
        indegree[v] += 1
    queue = deque(i for i in range(n) if indegree[i] == 0)
    order = []
    while queue:
        node = queue.popleft()
        order.append(node)
        for nxt in adjacency[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                queue.append(nxt)
    if len(order) != n:
        raise ValueError("cycle")
    return order
''', "Fail", "FIFO queue gives a valid but not the lexicographically smallest order"),
(r'''
import heapq


def topological_order(n, edges):
    indegree = [0] * n
    adjacency = [[] for _ in range(n)]
    for u, v in edges:
        adjacency[u].append(v)
        indegree[v] += 1
    heap = [i for i in range(n) if indegree[i] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        node = heapq.heappop(heap)
        order.append(node)
        for nxt in adjacency[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(heap, nxt)
    return order
''', "Fail", "no cycle detection: returns a partial order instead of raising ValueError"),
])

# 0039 longest_increasing_subsequence  (test code relies on the runner's `from solution import *`)
add("hard", "dp",
r'''
Write a function `longest_increasing_subsequence(nums)` that returns the length of the longest
**strictly** increasing subsequence of the list `nums` (not necessarily contiguous). Return `0`
for an empty list. Aim for O(n log n).

Examples:
```python
>>> longest_increasing_subsequence([10, 9, 2, 5, 3, 7, 101, 18])
4
>>> longest_increasing_subsequence([7, 7, 7])
1
```
''',
r'''
from bisect import bisect_left


def longest_increasing_subsequence(nums):
    """Return the length of the longest strictly increasing subsequence."""
    tails = []  # tails[k] = smallest tail of an increasing subsequence of length k + 1
    for x in nums:
        i = bisect_left(tails, x)
        if i == len(tails):
            tails.append(x)
        else:
            tails[i] = x
    return len(tails)
''',
r'''
def test_classic():
    assert longest_increasing_subsequence([10, 9, 2, 5, 3, 7, 101, 18]) == 4


def test_empty():
    assert longest_increasing_subsequence([]) == 0


def test_equal_elements_are_not_increasing():
    assert longest_increasing_subsequence([7, 7, 7]) == 1
    assert longest_increasing_subsequence([1, 3, 2, 2, 4]) == 3


def test_sorted_and_reversed():
    assert longest_increasing_subsequence([1, 2, 3, 4]) == 4
    assert longest_increasing_subsequence([5, 4, 3]) == 1


def test_last_element_not_in_answer():
    assert longest_increasing_subsequence([1, 2, 3, 0]) == 3
    assert longest_increasing_subsequence([0, 1, 0, 3, 2, 3]) == 4
''',
[fn("longest_increasing_subsequence", "(nums)", "Return the length of the longest strictly increasing subsequence.")],
[
(r'''
def longest_increasing_subsequence(nums):
    if not nums:
        return 0
    best = [1] * len(nums)
    for i in range(len(nums)):
        for j in range(i):
            if nums[j] < nums[i]:
                best[i] = max(best[i], best[j] + 1)
    return max(best)
''', "Pass", "correct: quadratic DP (slower than required but within the test sizes)"),
(r'''
from bisect import bisect_right


def longest_increasing_subsequence(nums):
    tails = []
    for x in nums:
        i = bisect_right(tails, x)
        if i == len(tails):
            tails.append(x)
        else:
            tails[i] = x
    return len(tails)
''', "Fail", "bisect_right computes the longest non-decreasing subsequence ([7, 7, 7] -> 3)"),
(r'''
def longest_increasing_subsequence(nums):
    if not nums:
        return 0
    best = [1] * len(nums)
    for i in range(len(nums)):
        for j in range(i):
            if nums[j] < nums[i]:
                best[i] = max(best[i], best[j] + 1)
    return best[-1]
''', "Fail", "returns the length ending at the last element instead of the maximum"),
])

# 0040 evaluate  (every candidate fails; one has a SyntaxError)
add("hard", "parsing",
r'''
Write a function `evaluate(expr)` that evaluates an arithmetic expression string containing
non-negative integer literals, the binary operators `+ - * /`, unary `+`/`-`, parentheses and
arbitrary whitespace. Use the usual precedence (`*` and `/` bind tighter than `+` and `-`) and
left associativity. Division is integer division that **truncates toward zero** (like C), so
`-7 / 2` is `-3`. Division by zero raises `ZeroDivisionError`; any malformed input (empty
expression, dangling operator, unbalanced parenthesis, unknown character, two numbers in a
row) raises `ValueError`. Do not use `eval`.

Examples:
```python
>>> evaluate("1 + 2 * 3")
7
>>> evaluate("-(2 + 3) * 2")
-10
>>> evaluate("7 / -2")
-3
```
''',
r'''
DIGITS = "0123456789"


def _tokenize(expr):
    tokens, i = [], 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch in DIGITS:
            j = i
            while j < len(expr) and expr[j] in DIGITS:
                j += 1
            tokens.append(int(expr[i:j]))
            i = j
        elif ch in "+-*/()":
            tokens.append(ch)
            i += 1
        else:
            raise ValueError(f"unexpected character {ch!r}")
    return tokens


def evaluate(expr):
    """Evaluate an integer arithmetic expression with C-style truncating division."""
    tokens = _tokenize(expr)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("unexpected end of expression")
        pos += 1
        return tokens[pos - 1]

    def expression():
        value = term()
        while peek() in ("+", "-"):
            if take() == "+":
                value += term()
            else:
                value -= term()
        return value

    def term():
        value = factor()
        while peek() in ("*", "/"):
            op = take()
            rhs = factor()
            if op == "*":
                value *= rhs
            else:
                if rhs == 0:
                    raise ZeroDivisionError("division by zero")
                quotient = abs(value) // abs(rhs)
                value = quotient if (value >= 0) == (rhs > 0) else -quotient
        return value

    def factor():
        tok = take()
        if tok == "-":
            return -factor()
        if tok == "+":
            return factor()
        if tok == "(":
            value = expression()
            if take() != ")":
                raise ValueError("expected ')'")
            return value
        if isinstance(tok, int):
            return tok
        raise ValueError(f"unexpected token {tok!r}")

    result = expression()
    if pos != len(tokens):
        raise ValueError("unexpected trailing input")
    return result
''',
r'''
import pytest
from solution import evaluate


def test_precedence_and_parentheses():
    assert evaluate("1 + 2 * 3") == 7
    assert evaluate("(1 + 2) * 3") == 9


def test_left_associativity():
    assert evaluate("2 - 3 - 4") == -5
    assert evaluate("100 / 10 / 5") == 2


def test_truncating_division():
    assert evaluate("10 / 3") == 3
    assert evaluate("-7 / 2") == -3
    assert evaluate("7 / -2") == -3


def test_unary_minus_and_whitespace():
    assert evaluate("-(2 + 3) * 2") == -10
    assert evaluate("  42 ") == 42


def test_division_by_zero():
    with pytest.raises(ZeroDivisionError):
        evaluate("1 / 0")


def test_malformed():
    for bad in ["", "1 +", "(1", "1 2", "2 $ 3", ")"]:
        with pytest.raises(ValueError):
            evaluate(bad)
''',
[fn("evaluate", "(expr)", "Evaluate an integer arithmetic expression with C-style truncating division.")],
[
(r'''
import re


def evaluate(expr):
    if not re.fullmatch(r"[0-9+\-*/()\s]*", expr):
        raise ValueError("bad character")
    return eval(expr.replace("/", "//"))
''', "Fail", "uses eval with floor division: '-7 / 2' gives -4, and malformed input raises SyntaxError"),
(r'''
def evaluate(expr):
    tokens = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch.isdigit():
            j = i
            while j < len(expr) and expr[j].isdigit():
                j += 1
            tokens.append(int(expr[i:j]))
            i = j
        elif ch in "+-*/()":
            tokens.append(ch)
            i += 1
        else:
            raise ValueError(ch)
    pos = 0

    def parse_sum()
        nonlocal pos
        value = parse_product()
        while pos < len(tokens) and tokens[pos] in ("+", "-"):
            op = tokens[pos]
            pos += 1
            rhs = parse_product()
            value = value + rhs if op == "+" else value - rhs
        return value

    def parse_product():
        nonlocal pos
        value = parse_atom()
        while pos < len(tokens) and tokens[pos] in ("*", "/"):
            op = tokens[pos]
            pos += 1
            rhs = parse_atom()
            value = value * rhs if op == "*" else int(value / rhs)
        return value

    def parse_atom():
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("unexpected end")
        tok = tokens[pos]
        pos += 1
        if tok == "-":
            return -parse_atom()
        if tok == "(":
            value = parse_sum()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise ValueError("expected )")
            pos += 1
            return value
        if isinstance(tok, int):
            return tok
        raise ValueError(tok)

    result = parse_sum()
    if pos != len(tokens):
        raise ValueError("trailing input")
    return result
''', "Fail", "SyntaxError: missing colon after 'def parse_sum()'"),
(r'''
def evaluate(expr):
    tokens = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch in "0123456789":
            j = i
            while j < len(expr) and expr[j] in "0123456789":
                j += 1
            tokens.append(int(expr[i:j]))
            i = j
        elif ch in "+-*/()":
            tokens.append(ch)
            i += 1
        else:
            raise ValueError(ch)
    pos = 0

    def take():
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("unexpected end")
        pos += 1
        return tokens[pos - 1]

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def expression():
        value = term()
        if peek() in ("+", "-"):
            op = take()
            rhs = expression()
            return value + rhs if op == "+" else value - rhs
        return value

    def term():
        value = factor()
        if peek() in ("*", "/"):
            op = take()
            rhs = term()
            if op == "*":
                return value * rhs
            if rhs == 0:
                raise ZeroDivisionError("division by zero")
            q = abs(value) // abs(rhs)
            return q if (value >= 0) == (rhs > 0) else -q
        return value

    def factor():
        tok = take()
        if tok == "-":
            return -factor()
        if tok == "+":
            return factor()
        if tok == "(":
            value = expression()
            if take() != ")":
                raise ValueError("expected )")
            return value
        if isinstance(tok, int):
            return tok
        raise ValueError(tok)

    result = expression()
    if pos != len(tokens):
        raise ValueError("trailing input")
    return result
''', "Fail", "recursive right-hand side makes '-' and '/' right-associative: '2 - 3 - 4' gives 3"),
])

# 0041 coin_change  (one candidate loops forever)
add("hard", "dp",
r'''
Write a function `coin_change(coins, amount)` that returns the minimum number of coins needed to
make up `amount`, using an unlimited supply of each positive denomination in `coins`. Return
`-1` if the amount cannot be made, and `0` when `amount` is `0`.

Examples:
```python
>>> coin_change([1, 2, 5], 11)
3
>>> coin_change([1, 3, 4], 6)
2
>>> coin_change([2], 3)
-1
```
''',
r'''
def coin_change(coins, amount):
    """Return the fewest coins summing to amount, or -1 if impossible."""
    INF = float("inf")
    best = [0] + [INF] * amount
    for value in range(1, amount + 1):
        for coin in coins:
            if coin <= value and best[value - coin] + 1 < best[value]:
                best[value] = best[value - coin] + 1
    return best[amount] if best[amount] != INF else -1
''',
r'''
from solution import coin_change


def test_basic():
    assert coin_change([1, 2, 5], 11) == 3


def test_impossible():
    assert coin_change([2], 3) == -1
    assert coin_change([5, 10], 3) == -1


def test_zero_amount():
    assert coin_change([1], 0) == 0


def test_greedy_is_not_optimal():
    assert coin_change([1, 3, 4], 6) == 2


def test_unsorted_coins():
    assert coin_change([2, 5, 10, 1], 27) == 4
''',
[fn("coin_change", "(coins, amount)", "Return the fewest coins summing to amount, or -1 if impossible.")],
[
(r'''
from functools import lru_cache


def coin_change(coins, amount):
    @lru_cache(maxsize=None)
    def need(rest):
        if rest == 0:
            return 0
        options = [need(rest - c) for c in coins if c <= rest]
        options = [o for o in options if o >= 0]
        return min(options) + 1 if options else -1
    return need(amount)
''', "Pass", "correct: memoised recursion over the remaining amount"),
(r'''
def coin_change(coins, amount):
    count = 0
    for coin in sorted(coins, reverse=True):
        take, amount = divmod(amount, coin)
        count += take
    return count if amount == 0 else -1
''', "Fail", "greedy largest-coin-first is not optimal: [1, 3, 4] for 6 gives 3 (4+1+1)"),
(r'''
def coin_change(coins, amount):
    count = 0
    ordered = sorted(coins, reverse=True)
    while amount > 0:
        for coin in ordered:
            if coin <= amount:
                amount -= coin
                count += 1
                break
    return count
''', "Fail", "timeout: greedy loop never terminates when no coin fits the remainder ([2] for 3)"),
])

# 0042 word_break  (all candidates pass)
add("hard", "dp",
r'''
Write a function `word_break(s, words)` that returns `True` if the string `s` can be split into a
sequence of one or more words from the list `words` (words may be reused), and `False`
otherwise. The empty string can always be segmented. The solution must be polynomial: inputs
like `"a" * 30 + "b"` with words `["a", "aa", "aaa"]` must return quickly.

Examples:
```python
>>> word_break("applepenapple", ["apple", "pen"])
True
>>> word_break("catsandog", ["cats", "dog", "sand", "and", "cat"])
False
```
''',
r'''
def word_break(s, words):
    """Return True if s can be segmented into words from the list (reuse allowed)."""
    vocab = set(words)
    lengths = sorted({len(w) for w in vocab})
    ok = [True] + [False] * len(s)
    for end in range(1, len(s) + 1):
        for size in lengths:
            if size > end:
                break
            if ok[end - size] and s[end - size:end] in vocab:
                ok[end] = True
                break
    return ok[len(s)]
''',
r'''
from solution import word_break


def test_two_words():
    assert word_break("leetcode", ["leet", "code"]) is True


def test_reuse_words():
    assert word_break("applepenapple", ["apple", "pen"]) is True


def test_not_segmentable():
    assert word_break("catsandog", ["cats", "dog", "sand", "and", "cat"]) is False


def test_empty_string_and_empty_vocab():
    assert word_break("", ["a"]) is True
    assert word_break("ab", []) is False


def test_needs_backtracking():
    assert word_break("aaaaaaa", ["aaaa", "aaa"]) is True


def test_polynomial_time():
    assert word_break("a" * 30 + "b", ["a", "aa", "aaa"]) is False
''',
[fn("word_break", "(s, words)", "Return True if s can be segmented into words from the list (reuse allowed).")],
[
(r'''
from functools import lru_cache


def word_break(s, words):
    vocab = frozenset(words)

    @lru_cache(maxsize=None)
    def can(start):
        if start == len(s):
            return True
        return any(s.startswith(w, start) and can(start + len(w)) for w in vocab if w)

    return can(0)
''', "Pass", "correct: memoised recursion on the start index"),
(r'''
from collections import deque


def word_break(s, words):
    queue, seen = deque([0]), {0}
    while queue:
        start = queue.popleft()
        if start == len(s):
            return True
        for w in words:
            end = start + len(w)
            if w and s.startswith(w, start) and end not in seen:
                seen.add(end)
                queue.append(end)
    return False
''', "Pass", "correct: BFS over reachable start positions"),
])

# 0043 count_islands
add("hard", "graphs",
r'''
Write a function `count_islands(grid)` that counts the islands in a 2-D grid given as a list of
lists of `0` (water) and `1` (land). An island is a group of land cells connected
**horizontally or vertically** (not diagonally). The grid must not be modified, and the
function must handle large grids (e.g. a 60 x 60 block of land) without hitting Python's
recursion limit.

Example:
```python
>>> count_islands([[1, 1, 0, 0],
...                [1, 0, 0, 1],
...                [0, 0, 1, 1]])
2
```
''',
r'''
from collections import deque


def count_islands(grid):
    """Count 4-connected groups of 1s in grid without modifying it."""
    if not grid:
        return 0
    rows, cols = len(grid), len(grid[0])
    seen = set()
    islands = 0
    for r in range(rows):
        for c in range(cols):
            if grid[r][c] != 1 or (r, c) in seen:
                continue
            islands += 1
            seen.add((r, c))
            queue = deque([(r, c)])
            while queue:
                y, x = queue.popleft()
                for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= ny < rows and 0 <= nx < cols and grid[ny][nx] == 1 and (ny, nx) not in seen:
                        seen.add((ny, nx))
                        queue.append((ny, nx))
    return islands
''',
r'''
import copy

from solution import count_islands


def test_example():
    grid = [
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 1],
        [0, 0, 0, 1, 1],
        [1, 0, 0, 0, 0],
    ]
    assert count_islands(grid) == 3


def test_water_only_and_empty():
    assert count_islands([[0, 0], [0, 0]]) == 0
    assert count_islands([]) == 0


def test_diagonal_cells_are_separate():
    assert count_islands([[1, 0], [0, 1]]) == 2


def test_single_cell():
    assert count_islands([[1]]) == 1


def test_grid_not_modified():
    grid = [[1, 0, 1], [1, 1, 0]]
    snapshot = copy.deepcopy(grid)
    assert count_islands(grid) == 2
    assert grid == snapshot


def test_large_block_of_land():
    assert count_islands([[1] * 60 for _ in range(60)]) == 1
''',
[fn("count_islands", "(grid)", "Count 4-connected groups of 1s in grid without modifying it.")],
[
(r'''
def count_islands(grid):
    rows = len(grid)
    cols = len(grid[0]) if rows else 0
    seen = [[False] * cols for _ in range(rows)]
    count = 0
    for r in range(rows):
        for c in range(cols):
            if grid[r][c] == 1 and not seen[r][c]:
                count += 1
                stack = [(r, c)]
                seen[r][c] = True
                while stack:
                    y, x = stack.pop()
                    for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                        if 0 <= ny < rows and 0 <= nx < cols and grid[ny][nx] == 1 and not seen[ny][nx]:
                            seen[ny][nx] = True
                            stack.append((ny, nx))
    return count
''', "Pass", "correct: iterative DFS with a separate visited matrix"),
(r'''
def count_islands(grid):
    def sink(r, c):
        if 0 <= r < len(grid) and 0 <= c < len(grid[0]) and grid[r][c] == 1:
            grid[r][c] = 0
            sink(r + 1, c)
            sink(r - 1, c)
            sink(r, c + 1)
            sink(r, c - 1)

    count = 0
    for r in range(len(grid)):
        for c in range(len(grid[0])):
            if grid[r][c] == 1:
                count += 1
                sink(r, c)
    return count
''', "Fail", "sinks islands by overwriting the caller's grid and recurses past the recursion limit on a 60x60 block"),
(r'''
def count_islands(grid):
    rows = len(grid)
    cols = len(grid[0]) if rows else 0
    seen = set()
    count = 0
    for r in range(rows):
        for c in range(cols):
            if grid[r][c] == 1 and (r, c) not in seen:
                count += 1
                stack = [(r, c)]
                seen.add((r, c))
                while stack:
                    y, x = stack.pop()
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = y + dy, x + dx
                            if 0 <= ny < rows and 0 <= nx < cols and grid[ny][nx] == 1 and (ny, nx) not in seen:
                                seen.add((ny, nx))
                                stack.append((ny, nx))
    return count
''', "Fail", "treats diagonal neighbours as connected (8-connectivity)"),
(r'''
def count_islands(grid):
    if not grid:
        return 0
    seen = set()
    count = 0
    for r in range(len(grid)):
        for c in range(len(grid[0])):
            if grid[r][c] == 1 and (r, c) not in seen:
                count += 1
                seen.add((r, c))
                queue = deque([(r, c)])
                while queue:
                    y, x = queue.popleft()
                    for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                        if 0 <= ny < len(grid) and 0 <= nx < len(grid[0]) and grid[ny][nx] == 1 and (ny, nx) not in seen:
                            seen.add((ny, nx))
                            queue.append((ny, nx))
    return count
''', "Fail", "NameError: deque is used without importing it from collections"),
])

# 0044 knapsack
add("hard", "dp",
r'''
Write a function `knapsack(weights, values, capacity)` that solves the 0/1 knapsack problem:
each item `i` has weight `weights[i]` and value `values[i]` and may be taken **at most once**.
Return the maximum total value whose total weight does not exceed `capacity`. Raise
`ValueError` if `weights` and `values` have different lengths.

Examples:
```python
>>> knapsack([1, 3, 4, 5], [1, 4, 5, 7], 7)
9
>>> knapsack([1], [10], 5)
10
```
''',
r'''
def knapsack(weights, values, capacity):
    """Return the best total value of a 0/1 knapsack with the given capacity."""
    if len(weights) != len(values):
        raise ValueError("weights and values must have the same length")
    n = len(weights)
    table = [[0] * (capacity + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        w, v = weights[i - 1], values[i - 1]
        for cap in range(capacity + 1):
            table[i][cap] = table[i - 1][cap]
            if w <= cap:
                table[i][cap] = max(table[i][cap], table[i - 1][cap - w] + v)
    return table[n][capacity]
''',
r'''
import pytest
from solution import knapsack


def test_classic():
    assert knapsack([1, 3, 4, 5], [1, 4, 5, 7], 7) == 9


def test_empty():
    assert knapsack([], [], 10) == 0


def test_item_too_heavy():
    assert knapsack([5], [10], 4) == 0


def test_each_item_at_most_once():
    assert knapsack([1], [10], 5) == 10
    assert knapsack([2, 2, 2], [3, 3, 3], 4) == 6


def test_length_mismatch():
    with pytest.raises(ValueError):
        knapsack([1, 2], [3], 5)
''',
[fn("knapsack", "(weights, values, capacity)", "Return the best total value of a 0/1 knapsack with the given capacity.")],
[
(r'''
def knapsack(weights, values, capacity):
    if len(weights) != len(values):
        raise ValueError("length mismatch")
    best = [0] * (capacity + 1)
    for w, v in zip(weights, values):
        for cap in range(capacity, w - 1, -1):
            best[cap] = max(best[cap], best[cap - w] + v)
    return best[capacity]
''', "Pass", "correct: 1-D table iterated from high to low capacity"),
(r'''
def knapsack(weights, values, capacity):
    if len(weights) != len(values):
        raise ValueError("length mismatch")
    best = [0] * (capacity + 1)
    for w, v in zip(weights, values):
        for cap in range(w, capacity + 1):
            best[cap] = max(best[cap], best[cap - w] + v)
    return best[capacity]
''', "Fail", "iterates capacities upwards, which lets an item be reused (unbounded knapsack)"),
(r'''
def knapsack(weights, values, capacity):
    best = [0] * (capacity + 1)
    for w, v in zip(weights, values):
        for cap in range(capacity, w - 1, -1):
            best[cap] = max(best[cap], best[cap - w] + v)
    return best[capacity]
''', "Fail", "no length check: zip silently drops the unmatched item instead of raising ValueError"),
])


def render() -> str:
    """The text of tasks.jsonl, one JSON row per task in declaration order."""
    ids = [t["question_id"] for t in TASKS]
    assert len(ids) == len(set(ids))
    return "".join(json.dumps(task, ensure_ascii=False) + "\n" for task in TASKS)


def main() -> None:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {len(TASKS)} tasks to {OUT}")


if __name__ == "__main__":
    main()
