"""Node configuration: ``config.toml`` in the data directory, validated with pydantic.

Every field has a default that makes a working local node, so a missing file is fine.
Each setting comes from, lowest first: its default, the file, the environment
(``AIMX_<SECTION>_<KEY>``, e.g. ``AIMX_CONTRIBUTOR_PRICE_FLOOR``) and a command-line
option. specs/config.md lists every key (a test checks it against these models).

The parts: ``_sections`` (the models), ``_load`` (reading and validating), ``_edit``
(changing settings on a running node, writing config.toml), ``_doc`` (specs/config.md's
table; ``python -m node.config`` prints or rewrites it).
"""

from ._doc import DOC_BEGIN as DOC_BEGIN
from ._doc import DOC_END as DOC_END
from ._doc import config_doc as config_doc
from ._edit import EDITABLE as EDITABLE
from ._edit import SettingError as SettingError
from ._edit import apply_changes as apply_changes
from ._edit import flatten as flatten
from ._edit import to_toml as to_toml
from ._edit import write_changes as write_changes
from ._load import CONFIG_FILE as CONFIG_FILE
from ._load import Source as Source
from ._load import config_keys as config_keys
from ._load import env_var as env_var
from ._load import load_config as load_config
from ._load import resolve_config as resolve_config
from ._sections import DEVNET_CHAIN_ID as DEVNET_CHAIN_ID
from ._sections import AvailabilityConfig as AvailabilityConfig
from ._sections import ContributorConfig as ContributorConfig
from ._sections import CoordinatorConfig as CoordinatorConfig
from ._sections import NodeConfig as NodeConfig
from ._sections import PauseOnUseConfig as PauseOnUseConfig
from ._sections import RequesterConfig as RequesterConfig
from ._sections import Role as Role
from ._sections import faucet_enabled as faucet_enabled
from ._sections import is_devnet_chain as is_devnet_chain
from ._sections import zone_of as zone_of
