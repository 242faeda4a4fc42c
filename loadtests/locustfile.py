"""Locust scenarios for the replikit image API; point it at any deployment:

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --tags mixed
    locust -f loadtests/locustfile.py,loadtests/shapes/step.py --host ... --headless

User classes (select with --tags or by class name): BrowseUser (browse), UploadUser (upload),
MixedUser (mixed), RywUser (ryw).
"""

from loadtests.users import BrowseUser, MixedUser, RywUser, UploadUser

__all__ = ["BrowseUser", "MixedUser", "RywUser", "UploadUser"]
