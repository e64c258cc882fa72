"""What handlers receive through `Provide`: a database session, the bus, the settings,
the live-event hub, the run filters.

The engine, sessionmaker and bus live in `app.state`, made by the app's lifespan
(`api.app.lifespan`); the functions here only hand them out, typed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TypeAlias, cast

from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.filters import RunFilter
from api.live import LiveHub
from api.pagination import Pagination
from common.bus import Bus
from common.settings import Settings

# Handler parameters name what they receive; the app maps each name to a provider.
SessionDep: TypeAlias = NamedDependency[AsyncSession]
BusDep: TypeAlias = NamedDependency[Bus]
SettingsDep: TypeAlias = NamedDependency[Settings]
PageDep: TypeAlias = NamedDependency[Pagination]
RunFilterDep: TypeAlias = NamedDependency[RunFilter]
HubDep: TypeAlias = NamedDependency[LiveHub]
SessionmakerDep: TypeAlias = NamedDependency[async_sessionmaker[AsyncSession]]
PathId: TypeAlias = FromPath[uuid.UUID]


async def provide_session(state: State) -> AsyncIterator[AsyncSession]:
    """A session per request; whatever it did not commit is rolled back when it closes."""
    sessionmaker = cast(async_sessionmaker[AsyncSession], state.sessionmaker)
    async with sessionmaker() as session:
        yield session


def provide_bus(state: State) -> Bus:
    return cast(Bus, state.bus)


def provide_settings(state: State) -> Settings:
    return cast(Settings, state.settings)


def provide_hub(state: State) -> LiveHub:
    return cast(LiveHub, state.live)


def provide_sessionmaker(state: State) -> async_sessionmaker[AsyncSession]:
    """For handlers that must not hold a session for the whole request (event streams:
    on SQLite an open transaction holds the one write lock)."""
    return cast(async_sessionmaker[AsyncSession], state.sessionmaker)
