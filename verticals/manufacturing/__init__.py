"""Manufacturing: visual defect detection with ultralytics YOLO, image in, pass/fail out.

The vertical's class is `verticals.manufacturing.vertical.ManufacturingVertical` (the entry
point); importing this package stays cheap.
"""
