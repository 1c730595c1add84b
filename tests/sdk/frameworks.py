#!/usr/bin/env python3
"""LangChain, llama-index, instructor and pydantic-ai as real clients of a tenant with a hosted model.

Starts the built `tenantry` binary with a hosted model behind the fake OpenAI-compatible upstream of
support.py, which records what it receives. Through each library's own API: a three-turn conversation whose
upstream request holds every turn, structured output, and (where the library drives one) a tool call.
Usage:

    target/frameworks-venv/bin/python tests/sdk/frameworks.py target/debug/tenantry
"""
import os
import sys
import unittest

from pydantic import BaseModel

from support import TenantCase

MODEL = "gpt-4o-mini"


class Place(BaseModel):
    city: str
    country: str


class Frameworks(TenantCase):
    hosted = True
    documents = [("Acme", "Acme Corporation has its headquarters in Lyon.")]

    def assert_three_turns_sent(self):
        roles = [m["role"] for m in self.sent()["messages"]]
        self.assertEqual(roles, ["system", "system", "user", "assistant", "user"])
        self.assertEqual(self.sent()["messages"][2]["content"], "Who makes the Widget 3000?")
        self.assertTrue(self.sent()["messages"][4]["content"].endswith("Question: Where is its headquarters?"))

    def test_langchain(self):
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
        from langchain_core.tools import tool
        from langchain_openai import ChatOpenAI

        llm = ChatOpenAI(model=MODEL, base_url=self.api, api_key=self.key, max_retries=0)
        answer = llm.invoke([SystemMessage("Answer in one sentence."), HumanMessage("Who makes the Widget 3000?"),
                             AIMessage("Acme Corporation."), HumanMessage("Where is its headquarters?")])
        self.assertIn("Lyon", answer.content)
        self.assert_three_turns_sent()
        for method in ["json_schema", "function_calling", "json_mode"]:
            place = llm.with_structured_output(Place, method=method).invoke("Where is Acme's headquarters?")
            self.assertEqual(place, Place(city="Lyon", country="France"), method)

        @tool
        def order_status(order: int) -> str:
            """An order's shipping status."""
            return "ships tomorrow"

        call = llm.bind_tools([order_status]).invoke("When does order 42 ship?").tool_calls[0]
        self.assertEqual((call["name"], call["args"]), ("order_status", {"order": 42}))

        # Citations reach LangChain as the Responses API's file citations.
        cited = ChatOpenAI(model=MODEL, base_url=self.api, api_key=self.key, max_retries=0, use_responses_api=True)
        blocks = cited.invoke("Where is Acme's headquarters?").content
        annotations = [a for b in blocks if isinstance(b, dict) for a in b.get("annotations", [])]
        self.assertIn("Acme", [a.get("filename") or a.get("title") for a in annotations], blocks)

    def test_llama_index(self):
        from llama_index.core.llms import ChatMessage
        from llama_index.llms.openai import OpenAI

        llm = OpenAI(model=MODEL, api_base=self.api, api_key=self.key, max_retries=0)
        answer = llm.chat([ChatMessage(role="system", content="Answer in one sentence."),
                           ChatMessage(role="user", content="Who makes the Widget 3000?"),
                           ChatMessage(role="assistant", content="Acme Corporation."),
                           ChatMessage(role="user", content="Where is its headquarters?")])
        self.assertIn("Lyon", answer.message.content)
        self.assert_three_turns_sent()
        self.assertEqual([c["title"] for c in answer.raw.model_extra["citations"]], ["Acme"])
        place = llm.as_structured_llm(Place).complete("Where is Acme's headquarters?").raw
        self.assertEqual(place, Place(city="Lyon", country="France"))

    def test_instructor(self):
        import instructor
        import openai

        client = instructor.from_openai(openai.OpenAI(base_url=self.api, api_key=self.key, max_retries=0))
        place = client.chat.completions.create(model=MODEL, response_model=Place, max_retries=0,
                                               messages=[{"role": "user", "content": "Where is Acme's headquarters?"}])
        self.assertEqual(place.model_dump(), {"city": "Lyon", "country": "France"})
        self.assertEqual(self.sent()["tool_choice"]["function"]["name"], "Place")

    def test_pydantic_ai(self):
        from pydantic_ai import Agent
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=self.api, api_key=self.key))
        result = Agent(model, output_type=Place).run_sync("Where is Acme's headquarters?")
        self.assertEqual(result.output, Place(city="Lyon", country="France"))
        self.assertTrue(self.sent()["tools"], "the output type reached the model as a tool")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    TenantCase.binary = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
