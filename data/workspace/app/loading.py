"""Load calculations. Loads are percentages of the nameplate rating."""


def transformer_load_pct(kw, rating_kva, power_factor=0.9):
    """Transformer load from metered real power: kVA drawn / nameplate kVA."""
    return kw / power_factor / rating_kva * 100


def generator_load_pct(kw, rating_kw):
    return kw / rating_kw * 100


def ups_load_pct(kva, rating_kva):
    return kva / rating_kva * 100


def headroom_kva(rating_kva, load_pct):
    """Spare capacity left before the nameplate rating is reached."""
    return rating_kva * (100 - load_pct) / 100
