"""A synchronous worker, shaped like a Celery (or RQ) task: plain ``invoke``, no asyncio.

    python examples/sync_worker.py --url redis://localhost:6379/0 [--run-id UUID] [--question Q]

The task opens a :class:`eventbus.SyncPublisher` (its event loop runs in a background
thread), passes ``pub.callback_handler()`` to ``invoke`` so that the run's events are
published, and flushes before returning. Follow the run from anywhere with
``eventbus tail RUN_ID`` or ``python examples/subscriber.py RUN_ID``.

With Celery it is the body of a task::

    @app.task
    def answer(question: str, run_id: str) -> str:
        return answer_question(question, run_id, url=BROKER_URL, namespace="myapp")
"""

from __future__ import annotations

import argparse
import os
import uuid
from typing import Any

from langchain_core.callbacks.manager import dispatch_custom_event
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

import eventbus

ANSWER = "Celery workers publish their LangChain runs through eventbus too."


def build_chain() -> Runnable[Any, str]:
    """A synchronous chain: a step that reports progress, then prompt | model | parser."""

    def check_input(inputs: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        for i, status in enumerate(["validating", "looking up context"], start=1):
            dispatch_custom_event(
                "progress",
                {"type": "progress", "current": i, "total": 2, "status": status},
                config=config,
            )
        return inputs

    model = GenericFakeChatModel(messages=iter([AIMessage(content=ANSWER)]))
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    return RunnableLambda(check_input, name="check_input") | prompt | model | StrOutputParser()


def answer_question(question: str, run_id: str, *, url: str, namespace: str) -> str:
    """The task body: run the chain with plain ``invoke`` and publish its events."""
    with eventbus.SyncPublisher(url, namespace) as pub:
        output: str = build_chain().invoke(
            {"q": question},
            config={"run_id": uuid.UUID(run_id), "callbacks": [pub.callback_handler()]},
        )
        pub.flush()  # everything on the broker before the task reports success
        print(f"sync_worker: run {run_id} done, {pub.stats.events} events published")
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("EVENTBUS_URL", "redis://localhost:6379/0"))
    parser.add_argument("--namespace", default=os.environ.get("EVENTBUS_NAMESPACE", "default"))
    parser.add_argument("--run-id", default=str(uuid.uuid4()))
    parser.add_argument("--question", default="Can sync workers publish?")
    args = parser.parse_args()
    output = answer_question(args.question, args.run_id, url=args.url, namespace=args.namespace)
    print(f"sync_worker: output {output!r}")


if __name__ == "__main__":
    main()
