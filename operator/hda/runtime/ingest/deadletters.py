"""Dead-letter REST on ingest, behind the same bearer token:
`GET /v1/streams/{stream}/deadletters[?limit=N]`, `GET .../deadletters/{id}`,
`POST .../deadletters/{id}/replay` and `POST .../deadletters/replay` (all)."""

from __future__ import annotations

from aiohttp import web

from ..deadletters import (
    DeadLetterNotFoundError,
    get_dead_letter,
    list_dead_letters,
    replay_all,
    replay_dead_letter,
)
from ..resp import Reconnecting, RespError
from .admission import Admission

MAX_LIST_LIMIT = 1000


class DeadLetterHandler:
    def __init__(self, admission: Admission, connection: Reconnecting) -> None:
        self.admission = admission
        self.connection = connection

    def add_routes(self, app: web.Application) -> None:
        base = "/v1/streams/{stream}/deadletters"
        app.router.add_get(base, self.list)
        app.router.add_post(base + "/replay", self.replay_all)
        app.router.add_get(base + "/{id:\\d+/\\d+-\\d+}", self.show)
        app.router.add_post(base + "/{id:\\d+/\\d+-\\d+}/replay", self.replay)

    async def list(self, request: web.Request) -> web.Response:
        stream, problem = self.admission.precheck(request)
        if problem is not None:
            return problem
        assert stream is not None
        text = request.query.get("limit", "100")
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIST_LIMIT:
            return self.admission.error(
                400, f"limit must be an integer in 1..{MAX_LIST_LIMIT}, got {text!r}", stream.name
            )
        try:
            letters = await list_dead_letters(await self.connection.get(), stream, limit=int(text))
        except (OSError, RespError):
            return self.admission.unavailable(stream.name)
        return web.json_response({"deadLetters": [letter.as_json() for letter in letters]})

    async def show(self, request: web.Request) -> web.Response:
        stream, problem = self.admission.precheck(request)
        if problem is not None:
            return problem
        assert stream is not None
        try:
            letter = await get_dead_letter(
                await self.connection.get(), stream, request.match_info["id"]
            )
        except ValueError as error:
            return self.admission.error(400, str(error), stream.name)
        except DeadLetterNotFoundError as error:
            return self.admission.error(404, str(error), stream.name)
        except (OSError, RespError):
            return self.admission.unavailable(stream.name)
        return web.json_response(letter.as_json())

    async def replay(self, request: web.Request) -> web.Response:
        stream, problem = self.admission.precheck(request)
        if problem is not None:
            return problem
        assert stream is not None
        letter_id = request.match_info["id"]
        try:
            entry = await replay_dead_letter(await self.connection.get(), stream, letter_id)
        except ValueError as error:
            return self.admission.error(400, str(error), stream.name)
        except DeadLetterNotFoundError as error:
            return self.admission.error(404, str(error), stream.name)
        except (OSError, RespError):
            return self.admission.unavailable(stream.name)
        return web.json_response({"replayed": [letter_id], "inputEntry": entry})

    async def replay_all(self, request: web.Request) -> web.Response:
        stream, problem = self.admission.precheck(request)
        if problem is not None:
            return problem
        assert stream is not None
        try:
            replayed = await replay_all(await self.connection.get(), stream)
        except (OSError, RespError):
            return self.admission.unavailable(stream.name)
        return web.json_response({"replayed": replayed})
