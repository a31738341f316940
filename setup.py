"""Package mapping only; all metadata lives in pyproject.toml.

The design's top-level folders (schemas/, broker/, audit/, agents/) install as subpackages of
mshale_fl, so nothing generic such as `agents` lands in site-packages. Subpackages are found
here rather than listed by hand so a new folder can never be silently left out of a wheel.
"""

from setuptools import find_packages, setup

PACKAGE_ROOTS = {
    "mshale_fl": "mshale_fl",
    "mshale_fl.schemas": "schemas",
    "mshale_fl.broker": "broker",
    "mshale_fl.audit": "audit",
    "mshale_fl.agents": "agents",
}

packages = []
for package, folder in PACKAGE_ROOTS.items():
    packages.append(package)
    packages.extend(f"{package}.{sub}" for sub in find_packages(folder))

setup(
    packages=packages,
    package_dir=PACKAGE_ROOTS,
    package_data={
        "mshale_fl": ["py.typed"],
        "mshale_fl.agents.partner.extract": ["data/*.json", "README.md"],
    },
)
