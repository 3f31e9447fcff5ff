"""Array type alias of the formula package (CONVENTIONS 11: aliases live in one place)."""

import numpy as np

#: a 1-D float series (a column of bars, returns, a signal); 2-D where a docstring says so
Array = np.ndarray
