// Lets `from lightning_attn import _C` load the library, whose static
// TORCH_LIBRARY blocks register the ops. There is no pybind11 surface: Python
// reaches every op through torch.ops.lightning_attn.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
