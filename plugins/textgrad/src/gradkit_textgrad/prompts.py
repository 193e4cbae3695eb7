"""Prompt texts of TextGrad.

They are written to be character-for-character the prompts of the reference package ``textgrad`` 0.1.8 (read
from its ``autograd/llm_backward_prompts.py``, ``autograd/string_based_ops.py``, ``autograd/reduce_prompts.py``
and ``optimizer/optimizer_prompts.py``), because the parity test asserts identical prompts.  The one addition is
``GRADIENT_MEMORY_ADDITION``: the reference keeps a gradient memory but never puts it in the prompt (its
``construct_tgd_prompt`` ignores the ``gradient_memory`` text it is given); here it is shown to the optimizer.
"""

SYSTEM_PROMPT_ROLE = (
    "system prompt to the language model that specifies the behavior and strategies, which will be reused across queries")
INPUT_ROLE = "query to the language model"
OUTPUT_ROLE = "response from the language model"
EVAL_SYSTEM_PROMPT_ROLE = "system prompt for the evaluation"

_BACKWARD_GLOSSARY = """
### Glossary of tags that will be sent to you:
# - <LM_SYSTEM_PROMPT>: The system prompt for the language model.
# - <LM_INPUT>: The input to the language model.
# - <LM_OUTPUT>: The output of the language model.
# - <OBJECTIVE_FUNCTION>: The objective of the optimization task.
# - <VARIABLE>: Specifies the span of the variable.
# - <ROLE>: The role description of the variable."""

BACKWARD_SYSTEM_PROMPT = (
    "You are part of an optimization system that improves a given text (i.e. the variable). You are the gradient "
    "(feedback) engine. Your only responsibility is to give intelligent and creative feedback and constructive "
    "criticism to variables, given an objective specified in <OBJECTIVE_FUNCTION> </OBJECTIVE_FUNCTION> tags. "
    "The variables may be solutions to problems, prompts to language models, code, or any other text-based "
    "variable. Pay attention to the role description of the variable, and the context in which it is used. You "
    "should assume that the variable will be used in a similar context in the future. Only provide strategies, "
    "explanations, and methods to change in the variable. DO NOT propose a new version of the variable, that will "
    "be the job of the optimizer. Your only job is to send feedback and criticism (compute 'gradients'). For "
    "instance, feedback can be in the form of 'Since language models have the X failure mode...', 'Adding X can "
    "fix this error because...', 'Removing X can improve the objective function because...', 'Changing X to Y "
    "would fix the mistake ...', that gets at the downstream objective.\n"
    "If a variable is already working well (e.g. the objective function is perfect, an evaluation shows the "
    "response is accurate), you should not give feedback.\n" + _BACKWARD_GLOSSARY)

# -- backward through an LLM call ------------------------------------------------------------------------------
LLM_CONVERSATION = ("<LM_SYSTEM_PROMPT> {system_prompt} </LM_SYSTEM_PROMPT>\n\n"
                    "<LM_INPUT> {prompt} </LM_INPUT>\n\n"
                    "<LM_OUTPUT> {response_value} </LM_OUTPUT>\n\n")
_GIVE_FEEDBACK = "You will give feedback to a variable with the following role: <ROLE> {variable_desc} </ROLE>. "
LLM_START_CHAIN = _GIVE_FEEDBACK + "Here is a conversation with a language model (LM):\n\n{conversation}"
LLM_START_BASE = _GIVE_FEEDBACK + "Here is an evaluation of the variable using a language model:\n\n{conversation}"
LLM_OBJECTIVE_CHAIN = (
    "This conversation is part of a larger system. The <LM_OUTPUT> was later used as {response_desc}.\n\n"
    "<OBJECTIVE_FUNCTION>Your goal is to give feedback to the variable to address the following feedback on the "
    "LM_OUTPUT: {response_gradient} </OBJECTIVE_FUNCTION>\n\n")
OBJECTIVE_BASE = (
    "<OBJECTIVE_FUNCTION>Your goal is to give feedback and criticism to the variable given the above evaluation "
    "output. Our only goal is to improve the above metric, and nothing else. </OBJECTIVE_FUNCTION>\n\n")
EVALUATE_VARIABLE = (
    "We are interested in giving feedback to the {variable_desc} for this conversation. Specifically, give "
    "feedback to the following span of text:\n\n<VARIABLE> {variable_short} </VARIABLE>\n\n"
    "Given the above history, describe how the {variable_desc} could be improved to improve the "
    "<OBJECTIVE_FUNCTION>. Be very creative, critical, and intelligent.\n\n")

# -- backward through a string-based function ------------------------------------------------------------------
FN_CONVERSATION = ("Function purpose: {function_purpose}\n\n"
                   "<INPUTS_TO_FUNCTION> {inputs_string} </INPUTS_TO_FUNCTION>\n\n"
                   "<OUTPUT_OF_FUNCTION> {response_value} </OUTPUT_OF_FUNCTION>\n\n")
FN_START_CHAIN = _GIVE_FEEDBACK + "Here is an evaluation of a string-based function with inputs and outputs :\n\n{conversation}"
FN_START_BASE = _GIVE_FEEDBACK + "Here is an evaluation of the variable using a string-based function:\n\n{conversation}"
FN_OBJECTIVE_CHAIN = (
    "This conversation is part of a larger system. The <OUTPUT_OF_FUNCTION> was later used as {response_desc}.\n\n"
    "<OBJECTIVE_FUNCTION>Your goal is to give feedback to the variable to address the following feedback on the "
    "OUTPUT_OF_FUNCTION: {response_gradient} </OBJECTIVE_FUNCTION>\n\n")

# -- sum (copy) and aggregate (LLM-summarised reduction) -------------------------------------------------------
SUM_FEEDBACK = ("Here is the combined feedback we got for this specific {variable_desc} and other variables: "
                "{feedback}.")
REDUCE_MEAN_SYSTEM_PROMPT = (
    "You are part of an optimization system that improves a given text (i.e. the variable). Your only "
    "responsibility is to critically aggregate and summarize the feedback from sources. The variables may be "
    "solutions to problems, prompts to language models, code, or any other text-based variable. The multiple "
    "sources of feedback will be given to you in <FEEDBACK> </FEEDBACK> tags. When giving a response, only provide "
    "the core summary of the feedback. Do not recommend a new version for the variable -- only summarize the "
    "feedback critically. ")

# -- the optimizer -----------------------------------------------------------------------------------------------
_OPT_GLOSSARY = """
### Glossary of tags that will be sent to you:
# - <LM_SYSTEM_PROMPT>: The system prompt for the language model.
# - <LM_INPUT>: The input to the language model.
# - <LM_OUTPUT>: The output of the language model.
# - <FEEDBACK>: The feedback to the variable.
# - <CONVERSATION>: The conversation history.
# - <FOCUS>: The focus of the optimization.
# - <ROLE>: The role description of the variable."""
OPTIMIZER_SYSTEM_PROMPT = (
    "You are part of an optimization system that improves text (i.e., variable). You will be asked to creatively "
    "and critically improve prompts, solutions to problems, code, or any other text-based variable. You will "
    "receive some feedback, and use the feedback to improve the variable. The feedback may be noisy, identify what "
    "is important and what is correct. Pay attention to the role description of the variable, and the context in "
    "which it is used. This is very important: You MUST give your response by sending the improved variable "
    "between {start_tag} {{improved variable}} {end_tag} tags. The text you send between the tags will directly "
    "replace the variable.\n\n" + _OPT_GLOSSARY)
TGD_PREFIX = (
    "Here is the role of the variable you will improve: <ROLE>{variable_desc}</ROLE>.\n\n"
    "The variable is the text within the following span: <VARIABLE> {variable_short} </VARIABLE>\n\n"
    "Here is the context and feedback we got for the variable:\n\n"
    "<CONTEXT>{variable_grad}</CONTEXT>\n\n"
    "Improve the variable ({variable_desc}) using the feedback provided in <FEEDBACK> tags.\n")
MOMENTUM_ADDITION = (
    "Here are the past iterations of this variable:\n\n<PAST_ITERATIONS>{past_values}</PAST_ITERATIONS>\n\n"
    "Similar feedbacks across different steps suggests that the modifications to the variable are insufficient."
    "If this is the case, please make more significant changes to the variable.\n\n")
GRADIENT_MEMORY_ADDITION = (
    "Here is the feedback this variable received in earlier steps:\n\n"
    "<PAST_FEEDBACK>{gradient_memory}</PAST_FEEDBACK>\n\n"
    "Feedback that repeats across steps shows what earlier improvements did not yet fix.\n\n")
CONSTRAINT_ADDITION = "You must follow the following constraints:\n\n<CONSTRAINTS>{constraint_text}</CONSTRAINTS>\n\n"
IN_CONTEXT_ADDITION = (
    "You must base on the following examples when modifying the {variable_desc}:\n\n"
    "<EXAMPLES>{in_context_examples}</EXAMPLES>\n\n")
TGD_SUFFIX = (
    "Send the improved variable in the following format:\n\n{start_tag}{{the improved variable}}{end_tag}\n\n"
    "Send ONLY the improved variable between the <IMPROVED_VARIABLE> tags, and nothing else.")
GRADIENT_TEMPLATE = (
    "Here is a conversation:\n\n<CONVERSATION>{context}</CONVERSATION>\n\n"
    "This conversation is potentially part of a larger system. The output is used as {response_desc}\n\n"
    "Here is the feedback we got for {variable_desc} in the conversation:\n\n<FEEDBACK>{feedback}</FEEDBACK>\n\n")

# -- compact optimizer prompt (gradkit's, not the paper's: TGD(prompt_style="compact") for small local models) ----
COMPACT_SYSTEM_PROMPT = ("You rewrite a text so that it addresses the feedback on it. "
                         "Reply with the rewritten text only, on one line.")
COMPACT_UPDATE = "Role of the text: {variable_desc}\nText: {variable_short}\nFeedback: {feedback}\n"
COMPACT_SUFFIX = "Rewritten text:"
