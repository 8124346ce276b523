"""Finance: credit-default (PD) scoring with LightGBM, scorecard points and reason codes.

The vertical's class is `verticals.finance.vertical.FinanceVertical` (the entry point);
importing this package stays cheap.
"""
