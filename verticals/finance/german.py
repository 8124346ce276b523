"""The German Credit data in UCI's coded `german.data` layout, decoded with its code book.

`german.data` is space-separated: 20 attributes coded A11, A12, ... and the outcome
1 = good, 2 = bad. A copy ships inside the package (CC BY 4.0, see datasets/ATTRIBUTION.md);
a user's own copy reads the same way. `default` = 1 marks a bad loan.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pandas as pd

from verticals.core.errors import UserError

COLUMNS = [
    "status_of_existing_checking_account",
    "duration_in_month",
    "credit_history",
    "purpose",
    "credit_amount",
    "savings_account_and_bonds",
    "present_employment_since",
    "installment_rate_in_percentage_of_disposable_income",
    "personal_status_and_sex",
    "other_debtors_or_guarantors",
    "present_residence_since",
    "property",
    "age_in_years",
    "other_installment_plans",
    "housing",
    "number_of_existing_credits_at_this_bank",
    "job",
    "number_of_people_being_liable_to_provide_maintenance_for",
    "telephone",
    "foreign_worker",
]

# The code book (german.doc), in the wording of the decoded copy.
CODES = {
    "A11": "... < 0 DM",
    "A12": "0 <= ... < 200 DM",
    "A13": "... >= 200 DM / salary assignments for at least 1 year",
    "A14": "no checking account",  # noqa: E501
    "A30": "no credits taken/ all credits paid back duly",
    "A31": "all credits at this bank paid back duly",
    "A32": "existing credits paid back duly till now",
    "A33": "delay in paying off in the past",
    "A34": "critical account/ other credits existing (not at this bank)",  # noqa: E501
    "A40": "car (new)",
    "A41": "car (used)",
    "A42": "furniture/equipment",
    "A43": "radio/television",
    "A44": "domestic appliances",
    "A45": "repairs",
    "A46": "education",
    "A47": "vacation",
    "A48": "retraining",
    "A49": "business",
    "A410": "others",  # noqa: E501
    "A61": "... < 100 DM",
    "A62": "100 <= ... < 500 DM",
    "A63": "500 <= ... < 1000 DM",
    "A64": "... >= 1000 DM",
    "A65": "unknown/ no savings account",  # noqa: E501
    "A71": "unemployed",
    "A72": "... < 1 year",
    "A73": "1 <= ... < 4 years",
    "A74": "4 <= ... < 7 years",
    "A75": "... >= 7 years",  # noqa: E501
    "A91": "male : divorced/separated",
    "A92": "female : divorced/separated/married",
    "A93": "male : single",
    "A94": "male : married/widowed",
    "A95": "female : single",  # noqa: E501
    "A101": "none",
    "A102": "co-applicant",
    "A103": "guarantor",
    "A121": "real estate",
    "A122": "building society savings agreement/ life insurance",
    "A123": "car or other, not in attribute 6",
    "A124": "unknown / no property",  # noqa: E501
    "A141": "bank",
    "A142": "stores",
    "A143": "none",
    "A151": "rent",
    "A152": "own",
    "A153": "for free",
    "A171": "unemployed/ unskilled - non-resident",
    "A172": "unskilled - resident",
    "A173": "skilled employee / official",
    "A174": "management/ self-employed/ highly qualified employee/ officer",  # noqa: E501
    "A191": "none",
    "A192": "yes, registered under the customers name",
    "A201": "yes",
    "A202": "no",
}


def load_shipped(target: str = "default") -> pd.DataFrame:
    """The 1,000 applicants shipped inside the package (CC BY 4.0, see ATTRIBUTION.md)."""
    return load_uci(Path(str(files("verticals.finance") / "datasets" / "german.data.gz")), target)


def load_uci(path: str | Path, target: str = "default") -> pd.DataFrame:
    """UCI's original coded `german.data`, decoded with the code book."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.path={path} does not exist")
    frame = pd.read_csv(path, sep=r"\s+", header=None, engine="python")
    if frame.shape[1] != len(COLUMNS) + 1:
        raise UserError(
            f"{path} has {frame.shape[1]} columns; UCI german.data has {len(COLUMNS) + 1} "
            "(20 attributes and the outcome)"
        )
    frame.columns = [*COLUMNS, target]
    for column in frame.columns[:-1]:
        if frame[column].dtype.kind not in "iuf":
            unknown = sorted(set(frame[column]) - CODES.keys())
            if unknown:
                raise UserError(
                    f"{path}: column {column} has codes {unknown[:3]} not in the code book"
                )
            frame[column] = frame[column].map(CODES)
    outcome = frame[target]
    if not outcome.isin([1, 2]).all():
        raise UserError(f"{path}: the last column must be 1 (good) or 2 (bad)")
    frame[target] = (outcome == 2).astype("int8")
    return frame
