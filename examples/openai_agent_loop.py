"""A hand-written agent loop on the raw openai client, tagged with pythia scopes.

Support triage: a ``triage`` agent classifies the ticket, a ``specialist`` works it with a
tool (``lookup_order``) until it is done, a ``responder`` writes the reply. Each ticket is
one session of workflow ``support_triage``; ``pythia.agent`` names the agent of every
call inside it and ``pythia.tool`` traces the tool. Several tickets run concurrently
(asyncio tasks keep their own tags).

    python examples/openai_agent_loop.py --base-url http://127.0.0.1:8000/v1 [--tickets 6]
"""

from __future__ import annotations

import argparse
import asyncio
import random

import openai

import pythia_sdk as pythia

WORKFLOW = "support_triage"
SYSTEM = {
    "triage": "You triage customer support tickets. Classify the ticket as billing, "
              "shipping or technical, rate its urgency from 1 to 3, and say which facts "
              "the specialist must look up.",
    "specialist": "You are a support specialist. Use the order records you are given to "
                  "resolve the ticket. Say DONE when the ticket is resolved, otherwise say "
                  "which record you need next.",
    "responder": "You write the final reply to the customer: friendly, precise, under 120 "
                 "words, with the resolution and any next step.",
}
TICKETS = ["My order 1182 arrived damaged.", "I was charged twice for order 2291.",
           "The app crashes when I open my order history.", "Where is order 3310?"]
MAX_SPECIALIST_STEPS = 3


async def ask(client: openai.AsyncOpenAI, model: str, role: str, content: str,
              max_tokens: int) -> str:
    reply = await client.chat.completions.create(
        model=model, max_tokens=max_tokens,
        messages=[{"role": "system", "content": SYSTEM[role]}, {"role": "user", "content": content}])
    return reply.choices[0].message.content or ""


async def lookup_order(ticket: str, step: int) -> str:
    with pythia.tool("lookup_order"):
        await asyncio.sleep(0.01)  # a database call
        return f"order record {step} for: {ticket}"


async def handle(client: openai.AsyncOpenAI, model: str, index: int) -> None:
    ticket = TICKETS[index % len(TICKETS)]
    rng = random.Random(index)
    async with pythia.workflow(WORKFLOW):
        async with pythia.agent("triage"):
            summary = await ask(client, model, "triage", ticket, 96)
        notes = summary
        async with pythia.agent("specialist"):
            for step in range(MAX_SPECIALIST_STEPS):
                notes += "\n" + await lookup_order(ticket, step)
                await ask(client, model, "specialist", f"Ticket: {ticket}\nNotes:\n{notes}", 160)
                if rng.random() < 0.5:  # synthetic replies cannot say DONE: draw it
                    break
        async with pythia.agent("responder"):
            await ask(client, model, "responder", f"Ticket: {ticket}\nResolution notes:\n{notes}", 192)


async def run(base_url: str, tickets: int = 6, model: str | None = None) -> None:
    client = pythia.instrument(openai.AsyncOpenAI(base_url=base_url, api_key="unused"))
    try:
        model = model or (await client.models.list()).data[0].id
        await asyncio.gather(*(handle(client, model, i) for i in range(tickets)))
    finally:
        await client.close()
        await asyncio.to_thread(pythia.flush, 10.0)
        pythia.uninstrument(client)


def main(base_url: str = "http://127.0.0.1:8000/v1", tickets: int = 6) -> None:
    asyncio.run(run(base_url, tickets))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--tickets", type=int, default=6)
    args = parser.parse_args()
    main(args.base_url, args.tickets)
