"""Domain knowledge (wafer defect patterns, radiology findings), kept apart from the generic ML code."""
