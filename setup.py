"""Everything about the package is in pyproject.toml; this file only ships the docs/*.md pages inside
it, as kdkit/docs/*.md, so `kdkit docs PAGE` works from a wheel (a source checkout reads docs/ itself:
kdkit.docs_pages)."""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithDocs(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "kdkit" / "docs"
        self.mkpath(str(target))
        for page in sorted(Path(__file__).parent.joinpath("docs").glob("*.md")):
            self.copy_file(str(page), str(target / page.name))


setup(cmdclass={"build_py": BuildWithDocs})
