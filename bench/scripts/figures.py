"""What the table scripts (summarize.py, push_table.py) share: how a figure is shown, and the
spread of a figure's runs."""
import statistics


def show(value):
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def spread(found):
    """(max - min) / median of the runs, in percent; None for fewer than two or a zero median."""
    if len(found) < 2:
        return None
    middle = statistics.median(found)
    return (max(found) - min(found)) / middle * 100 if middle else None
