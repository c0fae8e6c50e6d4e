"""Wire-faithful provider simulators (OpenAI, Anthropic, Gemini, Bedrock, SageMaker).

One aiohttp application serves every protocol plus ``/_sim/*`` control endpoints on
``sim.control``; see :mod:`tiergate.sim.server` for the control API and
:mod:`tiergate.sim.behaviour` for what a simulated model answers.
"""

from tiergate.sim.server import SimServer, sim_config_for

__all__ = ["SimServer", "sim_config_for"]
