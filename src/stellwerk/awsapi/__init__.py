"""The EventBridge API on Stellwerk: the AWS SDKs and CLI, pointed at a Stellwerk server with
`endpoint_url`, work against it unchanged (AWS JSON 1.1 on `POST /`, Signature Version 4).

docs/eventbridge-api.md describes it for users. The package reaches the core only through
`stellwerk.capability` and the facades of `stellwerk.service`.
"""

from starlette.routing import Match, Route
from starlette.types import Scope

from stellwerk.awsapi.edge import aws_json, fast_path
from stellwerk.awsapi.opened import NAME, AwsApiOpened, open_aws_api
from stellwerk.capability import Capability


class PostOnly(Route):
    """`POST /` and nothing else: other methods on `/` are not this API's, so they go on to the
    routes after it (a status page's custom domain) or a 404, not a 405 from here."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope["method"] != "POST":
            return Match.NONE, {}
        return super().matches(scope)


CAPABILITY = Capability(
    name=NAME,
    open=open_aws_api,
    routes=[PostOnly("/", aws_json, methods=["POST"])],
    fast_path=fast_path,  # every call, ahead of the app's stack
)

__all__ = ["CAPABILITY", "AwsApiOpened"]
