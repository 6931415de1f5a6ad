"""Running compressed models: sparse modules built from a `.dcz` without dense weights, and prediction."""
