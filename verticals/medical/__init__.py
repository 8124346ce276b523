"""Medical imaging: 3D segmentation of CT/MRI volumes with MONAI, served volume in, mask out.

The vertical's class is `verticals.medical.vertical.MedicalVertical` (the entry point);
importing this package stays cheap.
"""
