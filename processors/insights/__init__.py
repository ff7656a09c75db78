"""Early signs of decline: daily features, baselines and notices (docs/insights.md).

Pure and columnar: `daily_features` turns the events of many resident-days into features,
`advance` judges each resident's newest day against its baseline and raises `Notice`s.
Storage, the daily job and the simulator meet this through the shapes of `trygg.insights`.
"""

from processors.insights.baseline import HISTORY, States, advance, baseline, judged_z
from processors.insights.features import daily_features, seen_capabilities
from processors.insights.reasons import reason
from trygg.insights import frame_bounds

__all__ = ["HISTORY", "States", "advance", "baseline", "daily_features", "frame_bounds", "judged_z", "reason",
           "seen_capabilities"]
