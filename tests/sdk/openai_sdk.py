#!/usr/bin/env python3
"""The official OpenAI Python SDK as a real client of Tenantry's OpenAI-compatible API.

Starts the built `tenantry` binary (no configuration, built-in offline model) on a free port, signs a tenant
up, uploads a document, and drives /v1/chat/completions plain and streaming, /v1/models, and the error
paths through the SDK with the tenant's key as the API key. A second service is configured with a hosted
model behind a fake OpenAI-compatible upstream that records every request it receives and answers in the
wire format (plain and streamed, tool calls, `finish_reason`), to check that conversations, parameters and
tool calls reach the model and come back, through chat completions, the Responses API and OpenAI's Agents
SDK. Usage:

    target/sdk-venv/bin/python tests/sdk/openai_sdk.py target/debug/tenantry
"""
import json
import os
import sys
import unittest

import openai

from support import TenantCase

POLICY = "Refunds are issued within 14 days of a request. Shipping is free above 50 euros."
QUESTION = "How long do refunds take?"


class OpenAiSdk(TenantCase):
    documents = [("Policy", POLICY)]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client = openai.OpenAI(base_url=cls.api, api_key=cls.key, max_retries=0)

    def messages(self):
        return [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": QUESTION}]

    def test_plain_completion(self):
        raw = self.client.chat.completions.with_raw_response.create(model="default", messages=self.messages())
        self.assertTrue(raw.headers.get("x-request-id"))
        self.assertTrue(raw.headers.get("x-quota-queries-remaining"))
        r = raw.parse()
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.model, "local-small")
        self.assertTrue(r.id.startswith("chatcmpl-"))
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertIn("14 days", r.choices[0].message.content)
        self.assertNotIn("Shipping", r.choices[0].message.content)
        self.assertGreater(r.usage.prompt_tokens, 0)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)
        # The tenant's model named explicitly is the same as "default".
        again = self.client.chat.completions.create(model="local-small", messages=self.messages())
        self.assertEqual(again.choices[0].message.content, r.choices[0].message.content)

    def test_streaming_completion_with_usage(self):
        plain = self.client.chat.completions.create(model="default", messages=self.messages())
        stream = self.client.chat.completions.create(
            model="default", messages=self.messages(), stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, plain.choices[0].message.content)
        self.assertGreater(len([c for c in chunks if c.choices and c.choices[0].delta.content]), 1)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(finishes, ["stop"])
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.total_tokens, plain.usage.total_tokens)
        self.assertTrue(all(c.model == "local-small" for c in chunks))

    def test_models_lists_the_tenants_model(self):
        ids = [m.id for m in self.client.models.list()]
        self.assertEqual(ids, ["local-small"])

    def test_errors_raise_the_sdks_exceptions(self):
        bad = openai.OpenAI(base_url=self.base + "/v1", api_key="tk_not_a_key", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            bad.chat.completions.create(model="default", messages=self.messages())
        with self.assertRaises(openai.NotFoundError) as caught:
            self.client.chat.completions.create(model="gpt-4o", messages=self.messages())
        self.assertEqual(caught.exception.code, "model_not_found")
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(model="default", messages=[{"role": "system", "content": "x"}])

    def test_the_offline_model_honours_what_it_can_and_refuses_the_rest(self):
        cut = self.client.chat.completions.create(model="default", messages=self.messages(), max_tokens=2)
        self.assertEqual(cut.choices[0].finish_reason, "length")
        self.assertEqual(cut.usage.completion_tokens, 2)
        stopped = self.client.chat.completions.create(model="default", messages=self.messages(), stop=["14"])
        self.assertNotIn("14", stopped.choices[0].message.content)
        as_json = self.client.chat.completions.create(
            model="default", messages=self.messages(), response_format={"type": "json_object"})
        self.assertIn("14 days", json.loads(as_json.choices[0].message.content)["answer"])
        tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        for kwargs, param in [({"tools": [tool]}, "tools"), ({"logprobs": True}, "logprobs"),
                              ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}},
                               "response_format"), ({"n": 2}, "n")]:
            with self.assertRaises(openai.BadRequestError) as caught:
                self.client.chat.completions.create(model="default", messages=self.messages(), **kwargs)
            self.assertEqual((caught.exception.code, caught.exception.param), ("unsupported_parameter", param))

    def test_out_of_range_parameters_are_400s_naming_the_parameter(self):
        for kwargs, param in [({"temperature": 5}, "temperature"), ({"top_p": 1.5}, "top_p"),
                              ({"presence_penalty": -3}, "presence_penalty"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
                              ({"tool_choice": "required"}, "tool_choice")]:
            with self.assertRaises(openai.BadRequestError) as caught:
                self.client.chat.completions.create(model="default", messages=self.messages(), **kwargs)
            self.assertEqual(caught.exception.param, param, kwargs)

    def test_embeddings_through_the_sdk(self):
        # The SDK asks for base64 and decodes it; the vectors are the same as asked for as floats.
        r = self.client.embeddings.create(model="default", input=["Refunds take 14 days.", "Shipping is free."])
        self.assertEqual([d.index for d in r.data], [0, 1])
        floats = self.client.embeddings.create(model="default", input="Refunds take 14 days.",
                                               encoding_format="float")
        self.assertEqual(len(r.data[0].embedding), len(floats.data[0].embedding))
        for a, b in zip(r.data[0].embedding, floats.data[0].embedding):
            self.assertAlmostEqual(a, b, places=6)
        self.assertGreater(r.usage.prompt_tokens, 0)

    def test_the_responses_api_answers_plain_and_streamed(self):
        r = self.client.responses.create(model="default", input=QUESTION, instructions="Answer briefly.")
        self.assertEqual((r.object, r.status, r.model), ("response", "completed", "local-small"))
        self.assertIn("14 days", r.output_text)
        self.assertEqual(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens)
        events = list(self.client.responses.create(
            model="default", input=[{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}],
            stream=True))
        self.assertEqual(events[0].type, "response.created")
        self.assertEqual(events[-1].type, "response.completed")
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        self.assertEqual(deltas, r.output_text)
        self.assertEqual(events[-1].response.output_text, r.output_text)
        self.assertEqual([e.sequence_number for e in events], list(range(len(events))))

    def test_a_model_is_answered_by_name(self):
        self.assertEqual(self.client.models.retrieve("local-small").id, "local-small")
        with self.assertRaises(openai.NotFoundError):
            self.client.models.retrieve("gpt-4o")

    def test_an_over_long_conversation_is_context_length_exceeded(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "word " * 1500}], max_tokens=8000)
        self.assertEqual(caught.exception.code, "context_length_exceeded")


class HostedModel(TenantCase):
    """A tenant whose model is hosted: what reaches the upstream, and what comes back."""

    hosted = True
    # Other companies' headquarters, more than one question retrieves: a follow-up that does not name its
    # subject ("its headquarters") finds Acme's only if it is read with the turns before it.
    documents = [("Widgets", "The Widget 3000 is made by Acme Corporation."),
                 ("Acme", "Acme Corporation has its headquarters in Lyon.")] + [
        (company, f"Where is its headquarters? {company} Industries has its headquarters in {city}.")
        for company, city in [("Globex", "Paris"), ("Initech", "Austin"), ("Umbrella", "Berlin"),
                              ("Hooli", "Palo Alto"), ("Vandelay", "New York"), ("Soylent", "Oslo")]]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client = openai.OpenAI(base_url=cls.api, api_key=cls.key, max_retries=0)

    def test_a_three_turn_conversation_reaches_the_model_whole(self):
        messages = [
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": "Who makes the Widget 3000?"},
            {"role": "assistant", "content": "Its maker is in the catalogue [1]."},
            {"role": "user", "content": "Where is its headquarters?"},
        ]
        r = self.client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        self.assertRegex(r.choices[0].message.content, r"^Acme is headquartered in Lyon \[\d\]\.$")
        sent = self.sent()["messages"]
        self.assertEqual([m["role"] for m in sent], ["system", "system", "user", "assistant", "user"])
        self.assertEqual(sent[1]["content"], "Answer in one sentence.")
        self.assertEqual(sent[2]["content"], "Who makes the Widget 3000?")
        self.assertEqual(sent[3]["content"], "Its maker is in the catalogue [1].")
        self.assertTrue(sent[4]["content"].endswith("Question: Where is its headquarters?"))
        # The model restated the follow-up from the conversation, and that was searched: Acme's passage first.
        restating = self.upstream.requests[-2]["messages"][1]["content"]
        self.assertTrue(restating.endswith("Last question: Where is its headquarters?"), restating)
        self.assertIn("User: Who makes the Widget 3000?", restating)
        self.assertIn("[1] Acme\nAcme Corporation has its headquarters in Lyon.", sent[4]["content"])
        self.assertEqual(r.model_extra["citations"][0]["title"], "Acme")
        # Both calls are the request's tokens (the fake upstream's 30 + 9 and 50 + 5).
        self.assertEqual((r.usage.prompt_tokens, r.usage.completion_tokens), (80, 14))

    def test_every_parameter_reaches_the_upstream(self):
        self.client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Where is Acme?"}], temperature=0.2,
            top_p=0.9, stop=["END"], seed=7, presence_penalty=0.5, frequency_penalty=-0.5, logprobs=True,
            top_logprobs=2, max_completion_tokens=100, user="end-user-1", logit_bias={"50256": -100},
            parallel_tool_calls=False)
        sent = self.sent()
        expected = {"temperature": 0.2, "top_p": 0.9, "stop": ["END"], "seed": 7, "presence_penalty": 0.5,
                    "frequency_penalty": -0.5, "logprobs": True, "top_logprobs": 2, "max_tokens": 100,
                    "user": "end-user-1", "logit_bias": {"50256": -100}, "parallel_tool_calls": False,
                    "model": "gpt-4o-mini"}
        self.assertEqual({k: sent.get(k) for k in expected}, expected)

    def test_structured_output_through_the_sdks_parse(self):
        from pydantic import BaseModel

        class Place(BaseModel):
            city: str
            country: str

        r = self.client.beta.chat.completions.parse(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Where is Acme's headquarters?"}],
            response_format=Place)
        self.assertEqual(r.choices[0].message.parsed, Place(city="Lyon", country="France"))
        self.assertEqual(self.sent()["response_format"]["type"], "json_schema")

    def test_a_tool_calling_round_trip(self):
        tools = [{"type": "function", "function": {"name": "order_status", "description": "An order's status",
                                                   "parameters": {"type": "object",
                                                                  "properties": {"order": {"type": "integer"}}}}}]
        messages = [{"role": "user", "content": "When does order 42 ship?"}]
        first = self.client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools,
                                                    tool_choice="auto")
        self.assertEqual(first.choices[0].finish_reason, "tool_calls")
        call = first.choices[0].message.tool_calls[0]
        self.assertEqual((call.function.name, json.loads(call.function.arguments)), ("order_status", {"order": 42}))
        self.assertEqual(self.sent()["tools"], tools)
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "{\"ships\": \"tomorrow\"}"})
        second = self.client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
        self.assertEqual(second.choices[0].message.content, "Order 42 ships tomorrow.")
        sent = self.sent()["messages"]
        self.assertEqual([m["role"] for m in sent], ["system", "user", "assistant", "tool"])
        self.assertEqual(sent[2]["tool_calls"][0]["id"], call.id)
        self.assertEqual(sent[3]["tool_call_id"], call.id)

    def test_streamed_tool_calls_arrive_whole(self):
        tools = [{"type": "function", "function": {"name": "order_status", "parameters": {
            "type": "object", "properties": {"order": {"type": "integer"}}}}}]
        stream = self.client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "When does order 42 ship?"}], tools=tools,
            stream=True)
        chunks = list(stream)
        arguments = "".join(tc.function.arguments or "" for c in chunks if c.choices
                            for tc in (c.choices[0].delta.tool_calls or []))
        self.assertEqual(json.loads(arguments), {"order": 42})
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(finishes, ["tool_calls"])

    def test_the_responses_api_calls_functions_and_reads_their_output(self):
        tools = [{"type": "function", "name": "order_status", "description": "An order's status",
                  "parameters": {"type": "object", "properties": {"order": {"type": "integer"}}}}]
        asked = {"role": "user", "content": "When does order 42 ship?"}
        first = self.client.responses.create(model="gpt-4o-mini", input=[asked], tools=tools, tool_choice="auto")
        call = next(o for o in first.output if o.type == "function_call")
        self.assertEqual((call.name, json.loads(call.arguments)), ("order_status", {"order": 42}))
        self.assertEqual(self.sent()["tools"], [{"type": "function", "function": {
            k: v for k, v in tools[0].items() if k != "type"}}])
        self.assertEqual(self.sent()["tool_choice"], "auto")
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "{\"ships\": \"tomorrow\"}"}
        second = self.client.responses.create(model="gpt-4o-mini", tools=tools,
                                              input=[asked, call.model_dump(exclude_none=True), output])
        self.assertEqual(second.output_text, "Order 42 ships tomorrow.")
        sent = self.sent()["messages"]
        self.assertEqual([m["role"] for m in sent], ["system", "user", "assistant", "tool"])
        self.assertEqual((sent[2]["tool_calls"][0]["id"], sent[3]["tool_call_id"]), (call.call_id, call.call_id))

        events = list(self.client.responses.create(model="gpt-4o-mini", input=[asked], tools=tools, stream=True))
        done = [e for e in events if e.type == "response.function_call_arguments.done"]
        self.assertEqual([json.loads(e.arguments) for e in done], [{"order": 42}])
        self.assertEqual(events[-1].type, "response.completed")
        self.assertEqual([o.type for o in events[-1].response.output], ["function_call"])
        self.assertEqual([e.sequence_number for e in events], list(range(len(events))))

    def test_structured_output_through_the_responses_api(self):
        from pydantic import BaseModel

        class Place(BaseModel):
            city: str
            country: str

        r = self.client.responses.parse(model="gpt-4o-mini", input="Where is Acme's headquarters?", text_format=Place)
        self.assertEqual(r.output_parsed, Place(city="Lyon", country="France"))
        sent = self.sent()["response_format"]
        self.assertEqual((sent["type"], sent["json_schema"]["name"]), ("json_schema", "Place"))
        self.assertEqual(sent["json_schema"]["schema"]["required"], ["city", "country"])

    def test_finish_reason_length_comes_back(self):
        r = self.client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Where is Acme?"}], max_tokens=3)
        self.assertEqual(r.choices[0].finish_reason, "length")
        stream = self.client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Where is Acme?"}], max_tokens=3, stream=True)
        finishes = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
        self.assertEqual(finishes, ["length"])


class AgentsSdk(TenantCase):
    """OpenAI's Agents SDK with Tenantry as its model, through the Responses API: a tool-using agent (plain and
    streamed) and an agent with a structured output type."""

    hosted = True
    documents = [("Acme", "Acme Corporation has its headquarters in Lyon.")]

    def model(self):
        from agents import OpenAIResponsesModel, set_tracing_disabled

        set_tracing_disabled(True)
        client = openai.AsyncOpenAI(base_url=self.api, api_key=self.key, max_retries=0)
        return OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client)

    def test_an_agent_calls_its_tool_and_answers(self):
        import asyncio

        from agents import Agent, Runner, function_tool

        ran = []

        @function_tool
        def order_status(order: int) -> str:
            """An order's shipping status."""
            ran.append(order)
            return "ships tomorrow"

        agent = Agent(name="Support", instructions="Answer briefly.", tools=[order_status], model=self.model())
        result = Runner.run_sync(agent, "When does order 42 ship?")
        self.assertEqual((ran, result.final_output), ([42], "Order 42 ships tomorrow."))
        sent = self.sent()["messages"]
        self.assertEqual([m["role"] for m in sent], ["system", "system", "user", "assistant", "tool"])
        self.assertEqual(sent[1]["content"], "Answer briefly.")
        self.assertEqual(sent[4]["content"], "ships tomorrow")

        async def streamed():
            # A client of this event loop: the run above had its own.
            run = Runner.run_streamed(agent.clone(model=self.model()), "When does order 42 ship?")
            kinds = [event.type async for event in run.stream_events()]
            return run.final_output, kinds

        final, kinds = asyncio.run(streamed())
        self.assertEqual((ran, final), ([42, 42], "Order 42 ships tomorrow."))
        self.assertIn("raw_response_event", kinds)

    def test_an_agent_returns_its_output_type(self):
        from agents import Agent, Runner
        from pydantic import BaseModel

        class Place(BaseModel):
            city: str
            country: str

        agent = Agent(name="Geographer", output_type=Place, model=self.model())
        result = Runner.run_sync(agent, "Where is Acme's headquarters?")
        self.assertEqual(result.final_output, Place(city="Lyon", country="France"))
        self.assertEqual(self.sent()["response_format"]["type"], "json_schema")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    TenantCase.binary = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
