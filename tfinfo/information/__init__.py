"""Information quantities: Gaussian closed forms (and, later, variational and kNN estimators)."""

from tfinfo.information.gaussian import gaussian_lautum_information
from tfinfo.information.gaussian import gaussian_mutual_information

__all__ = ["gaussian_lautum_information", "gaussian_mutual_information"]
