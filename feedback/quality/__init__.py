"""Quality control: gold answers, inter-annotator agreement (Krippendorff's alpha), position bias, and the
model-version leaderboard (Bradley-Terry with bootstrap intervals, Elo).

The maths (agreement.py, leaderboard.py, plots.py) is pure Python/numpy on plain values; selectors.py reads the
database into those values, services.py writes (gold answers, flags)."""
