"""Small embedded word lists: the facts behind the built-in ICL tasks and the toy corpus grammar.

Plain data, no logic. Lists are short on purpose (a few hundred words in all) so the built-in tasks
and the toy tokenizer stay small; every entry is lowercase ASCII.
"""

# singular -> plural, regular and irregular
NOUNS: dict[str, str] = {
    "apple": "apples", "arrow": "arrows", "baby": "babies", "bag": "bags", "ball": "balls",
    "bank": "banks", "basket": "baskets", "bed": "beds", "bell": "bells", "bird": "birds",
    "boat": "boats", "book": "books", "bottle": "bottles", "box": "boxes", "bridge": "bridges",
    "brush": "brushes", "bus": "buses", "cake": "cakes", "candle": "candles", "car": "cars",
    "card": "cards", "cat": "cats", "chair": "chairs", "child": "children", "city": "cities",
    "cloud": "clouds", "coat": "coats", "coin": "coins", "cup": "cups", "desk": "desks",
    "dish": "dishes", "dog": "dogs", "door": "doors", "dream": "dreams", "drum": "drums",
    "egg": "eggs", "engine": "engines", "farm": "farms", "field": "fields", "fish": "fish",
    "flag": "flags", "flower": "flowers", "foot": "feet", "forest": "forests", "fox": "foxes",
    "friend": "friends", "game": "games", "garden": "gardens", "gate": "gates", "glass": "glasses",
    "goose": "geese", "hat": "hats", "hill": "hills", "horse": "horses", "house": "houses",
    "island": "islands", "key": "keys", "king": "kings", "knife": "knives", "lake": "lakes",
    "lamp": "lamps", "leaf": "leaves", "letter": "letters", "lion": "lions", "map": "maps",
    "market": "markets", "mountain": "mountains", "mouse": "mice", "nest": "nests", "night": "nights",
    "ocean": "oceans", "pen": "pens", "pencil": "pencils", "person": "people", "piano": "pianos",
    "plate": "plates", "pond": "ponds", "queen": "queens", "rabbit": "rabbits", "river": "rivers",
    "road": "roads", "rock": "rocks", "room": "rooms", "school": "schools", "sheep": "sheep",
    "ship": "ships", "shoe": "shoes", "song": "songs", "star": "stars", "stone": "stones",
    "story": "stories", "table": "tables", "teacher": "teachers", "tooth": "teeth", "tower": "towers",
    "town": "towns", "train": "trains", "tree": "trees", "wall": "walls", "watch": "watches",
    "wheel": "wheels", "window": "windows", "wolf": "wolves", "woman": "women", "word": "words",
}

ADJECTIVES: tuple[str, ...] = (
    "big", "small", "old", "young", "happy", "sad", "bright", "dark", "quiet", "loud", "warm", "cold",
    "fast", "slow", "kind", "brave", "clever", "gentle", "strange", "tiny", "huge", "calm", "wild",
    "soft", "hard", "early", "late", "rich", "poor", "clean", "dirty", "heavy", "light", "tall", "short",
)

# present -> past
VERBS: dict[str, str] = {
    "walk": "walked", "jump": "jumped", "play": "played", "open": "opened", "close": "closed",
    "watch": "watched", "carry": "carried", "paint": "painted", "call": "called", "help": "helped",
    "find": "found", "see": "saw", "take": "took", "give": "gave", "make": "made", "run": "ran",
    "eat": "ate", "drink": "drank", "sing": "sang", "write": "wrote", "read": "read", "buy": "bought",
    "build": "built", "bring": "brought", "hold": "held", "keep": "kept", "leave": "left",
    "meet": "met", "sell": "sold", "send": "sent", "sit": "sat", "speak": "spoke", "swim": "swam",
    "teach": "taught", "think": "thought", "throw": "threw", "win": "won", "fly": "flew",
}

ANTONYMS: dict[str, str] = {
    "big": "small", "old": "young", "happy": "sad", "bright": "dark", "quiet": "loud", "warm": "cold",
    "fast": "slow", "rich": "poor", "clean": "dirty", "heavy": "light", "tall": "short",
    "early": "late", "hard": "soft", "up": "down", "in": "out", "open": "closed", "true": "false",
    "win": "lose", "buy": "sell", "give": "take", "begin": "end", "first": "last", "near": "far",
    "high": "low", "left": "right", "full": "empty", "wet": "dry", "strong": "weak", "thick": "thin",
    "wide": "narrow", "day": "night", "love": "hate", "push": "pull", "more": "less", "good": "bad",
    "black": "white", "hot": "cool", "sweet": "sour", "before": "after", "above": "below",
    "inside": "outside", "always": "never", "alive": "dead", "cheap": "expensive", "safe": "dangerous",
}

ANIMALS: tuple[str, ...] = (
    "bear", "cat", "cow", "deer", "dog", "duck", "eagle", "fox", "frog", "goat", "horse", "lion",
    "monkey", "mouse", "owl", "panda", "parrot", "pig", "rabbit", "shark", "sheep", "snake", "tiger",
    "turtle", "whale", "wolf", "zebra", "camel", "otter", "falcon",
)

FRUITS: tuple[str, ...] = (
    "apple", "banana", "cherry", "grape", "lemon", "lime", "mango", "melon", "orange", "peach",
    "pear", "plum", "kiwi", "papaya", "apricot", "fig", "guava", "coconut", "berry", "date",
)

COLORS: tuple[str, ...] = (
    "red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white", "gray",
    "violet", "indigo", "silver", "golden", "crimson",
)

# ordered sequences for next/previous item
SEQUENCES: tuple[tuple[str, ...], ...] = (
    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    ("january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december"),
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
     "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
     "twenty"),
    tuple("abcdefghijklmnopqrstuvwxyz"),
    tuple(str(i) for i in range(100)),
)

# syllables for the toy corpus's invented names (multi-token under a small BPE, so later pieces of a
# name are predictable in context only by copying: what induction heads do)
SYLLABLES: tuple[str, ...] = (
    "ka", "zor", "mi", "vel", "tu", "rin", "bo", "sha", "lek", "dra", "nu", "fey", "gor", "pla", "xi",
    "quo", "jen", "wab", "hil", "sto", "ury", "cre", "mox", "ti", "bel", "yag", "osk", "ven", "rup",
)
