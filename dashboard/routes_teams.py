"""Teams for the care pages: their names (the console shows "Hjemmetjenesten Øst", not
`east`), and each team's devices that need a visit."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from dashboard.authz import Action, require, team_scope
from dashboard.deps import CurrentUser, Pool
from dashboard.errors import responses

router = APIRouter(prefix="/api", tags=["teams"])


class TeamOut(BaseModel):
    id: str
    name: str
    escalate_to: str | None = None


@router.get("/teams", response_model=list[TeamOut], responses=responses(401, 403),
            summary="The caller's teams (operator and admin: all), with their names")
async def teams(who: CurrentUser, pool: Pool) -> list[TeamOut]:
    require(who, Action.TEAMS_LIST)
    scope = team_scope(who)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, name, escalate_to FROM trygg.teams WHERE %(all)s OR id = ANY(%(teams)s) ORDER BY name, id",
            {"all": scope is None, "teams": sorted(scope or ())})
        rows = await cur.fetchall()
    return [TeamOut(id=r[0], name=r[1], escalate_to=r[2]) for r in rows]


__all__ = ["router"]
