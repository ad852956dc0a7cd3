from __future__ import annotations

import pytest

from mgpu_client.sbatch import parse_directives
from mgpu_core.errors import ConfigError


def test_directives_until_first_command() -> None:
    script = (
        "#!/bin/bash\n"
        "\n"
        "#SBATCH --gpus=2 -J 'my job'\n"
        "# plain comment\n"
        "#MGPU --time 1:00:00  # trailing comment\n"
        "#SBATCHX --ignored\n"
        "echo hi\n"
        "#SBATCH --gpus 8\n"
    )
    assert parse_directives(script) == ["--gpus=2", "-J", "my job", "--time", "1:00:00"]


def test_no_directives() -> None:
    assert parse_directives("#!/bin/sh\necho\n") == []


def test_unbalanced_quote_names_the_line() -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_directives("#!/bin/sh\n#SBATCH -J 'oops\n")
