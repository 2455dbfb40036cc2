"""Settings from config/*.ini: alarm thresholds and polling intervals."""

import configparser
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def _load(name):
    parser = configparser.ConfigParser()
    parser.read(CONFIG_DIR / name)
    return parser


def thresholds(kind):
    """Alarm limits for one asset kind ('transformer', 'generator', 'ups'), as floats."""
    section = _load("thresholds.ini")[kind]
    return {key: float(value) for key, value in section.items()}


def polling_seconds(kind):
    """How often the gateway polls assets of this kind."""
    return _load("polling.ini").getint("polling", f"{kind}_seconds")
