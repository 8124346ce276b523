"""Retail: implicit-feedback product recommendation with `implicit` (ALS, BPR, LMF).

The vertical's class is `verticals.retail.vertical.RetailVertical` (the entry point);
importing this package stays cheap.
"""
